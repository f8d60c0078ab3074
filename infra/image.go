package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Where the image of the enricher run service keeps the consumer.
const (
	imageBinary    = "/enricher"
	imageConfigDir = "/etc/enricher"
	// imageUser is the unprivileged user the task runs as (the "nonroot"
	// of distroless images); the binary needs no file of its own but /tmp.
	imageUser = "65532:65532"
	imageTag  = "enricher:asset"
)

// Image is the container image of the consumer, built from the asset.
type Image struct {
	// Tarball is the image in `docker save` form, which a CDK tarball
	// image asset names: cdk deploy loads it into the local image store
	// (docker load) and pushes it to the bootstrap ECR repository.
	Tarball string
	// ID is the digest of the image's config (sha256:...): `docker load`
	// and `docker inspect` show it as the image id, and it does not change
	// in the push, unlike the manifest digest (the registry recompresses).
	ID string
}

// BuildImage writes the image of the enricher run service for the asset
// to out, without a Docker daemon (go-containerregistry): an empty base and
// one layer holding the static binary at /enricher, enricher.yaml and the
// job specs under /etc/enricher and an empty /tmp. CA certificates come
// with the binary (golang.org/x/crypto/x509roots/fallback, imported by
// cmd/enricher): there is no other file. Every time stamp is zero, so the
// same asset gives the same tarball, and the asset hash (the tag cdk
// deploy pushes) moves only with the consumer.
func BuildImage(a *Asset, out string) (*Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: time.Unix(0, 0)})
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	dirs := map[string]bool{}
	for _, f := range a.Files {
		dst, _ := imagePath(f)
		for d := path.Dir(dst); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range sortedKeys(dirs) { // parents sort before children
		if err := dir(d[1:], 0o755); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	for _, f := range a.Files {
		dst, mode := imagePath(f)
		if err := addFile(tw, filepath.Join(a.Dir, filepath.FromSlash(f)), dst[1:], mode); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "infra: enricher consumer"}})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "arm64"
	cf.Config.Entrypoint = []string{imageBinary}
	cf.Config.Cmd = []string{"run", "--log-format", "json"}
	cf.Config.Env = []string{envConfig + "=" + path.Join(imageConfigDir, configFile)}
	cf.Config.User = imageUser
	cf.Config.WorkingDir = "/tmp"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("image id: %w", err)
	}
	tag, err := name.NewTag(imageTag)
	if err != nil {
		return nil, fmt.Errorf("image tag: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return nil, fmt.Errorf("write image tarball: %w", err)
	}
	return &Image{Tarball: out, ID: id.String()}, nil
}

// imagePath is where a file of the asset goes in the image, and its mode.
func imagePath(f string) (string, int64) {
	if f == bootstrapFile {
		return imageBinary, 0o755
	}
	return path.Join(imageConfigDir, f), 0o644
}

func addFile(tw *tar.Writer, src, name string, mode int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: st.Size(), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
