package specfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxFileBytes is the largest config or job spec file ReadFile reads. The
// largest real one is a few kilobytes; the limit stops a wrong path (a log,
// a data file) from being read into memory whole.
const MaxFileBytes = 4 << 20

// ReadFile reads a config or job spec file. Only a regular file of at most
// MaxFileBytes is read: a folder, a device (/dev/zero never ends), a FIFO
// (it blocks until someone writes) or a socket is refused without being
// opened, a larger file without being read, each as a *FieldError naming
// path. A file that cannot be opened returns the *fs.PathError.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkFileInfo(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The path may have been replaced since the Stat: check what was
	// opened, and read no more than the limit whatever it is.
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := checkFileInfo(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, tooLarge(path)
	}
	return data, nil
}

func checkFileInfo(path string, fi fs.FileInfo) error {
	m := fi.Mode()
	if !m.IsRegular() {
		kind := "not a regular file"
		switch {
		case m.IsDir():
			kind = "a folder, not a file"
		case m&fs.ModeNamedPipe != 0:
			kind = "a FIFO, not a regular file"
		case m&fs.ModeSocket != 0:
			kind = "a socket, not a regular file"
		case m&fs.ModeDevice != 0:
			kind = "a device, not a regular file"
		}
		return &FieldError{File: path, Reason: "is " + kind + ": a config or job spec must be a regular file"}
	}
	if fi.Size() > MaxFileBytes {
		return tooLarge(path)
	}
	return nil
}

func tooLarge(path string) error {
	return &FieldError{File: path, Reason: fmt.Sprintf("is larger than the limit of a config or job spec, %d MiB (%d bytes)", MaxFileBytes>>20, MaxFileBytes)}
}
