package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
)

// spiller owns the spill files of one anti-join: a temporary folder made
// at the first file, and every file in it, open or not. cleanup closes
// and removes them all, whatever happened.
type spiller struct {
	parent  string // where the folder goes ("" : os.TempDir)
	dir     string
	seq     int
	open    map[*spillFile]struct{}
	bufSize int
	written int64 // bytes written to every file
}

// spillFile is one partition of keys on disk. A record is a key (a long's
// mix64 image in 8 bytes, or a string as its length and bytes) followed,
// for source keys, by the row's position as a delta from the record
// before (rows are written in increasing order).
type spillFile struct {
	path     string
	f        *os.File
	w        *bufio.Writer
	rows     bool  // records carry row positions
	n        int64 // records
	keyBytes int64 // bytes of string keys
	last     int64 // row of the last record written
	scratch  [2 * binary.MaxVarintLen64]byte
}

func (sp *spiller) create(rows bool) (*spillFile, error) {
	if sp.dir == "" {
		dir, err := os.MkdirTemp(sp.parent, "enricher-antijoin-")
		if err != nil {
			return nil, fmt.Errorf("spill folder: %w", err)
		}
		sp.dir = dir
		sp.open = map[*spillFile]struct{}{}
	}
	sp.seq++
	path := filepath.Join(sp.dir, fmt.Sprintf("%06d.keys", sp.seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	sf := &spillFile{path: path, f: f, w: bufio.NewWriterSize(f, sp.bufSize), rows: rows}
	sp.open[sf] = struct{}{}
	return sf, nil
}

// createN makes n files.
func (sp *spiller) createN(n int, rows bool) ([]*spillFile, error) {
	out := make([]*spillFile, n)
	for i := range out {
		f, err := sp.create(rows)
		if err != nil {
			return nil, err
		}
		out[i] = f
	}
	return out, nil
}

// finish flushes and closes f's writer; the file stays to be read.
func (sp *spiller) finish(f *spillFile) error {
	if f.f == nil {
		return nil
	}
	err := f.w.Flush()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	f.f, f.w = nil, nil
	delete(sp.open, f)
	if err != nil {
		return fmt.Errorf("spill file %s: %w", f.path, err)
	}
	return nil
}

// remove deletes f (closing it first if need be).
func (sp *spiller) remove(f *spillFile) error {
	if f.f != nil {
		if err := f.f.Close(); err != nil {
			return fmt.Errorf("spill file %s: %w", f.path, err)
		}
		f.f, f.w = nil, nil
		delete(sp.open, f)
	}
	if err := os.Remove(f.path); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	return nil
}

// cleanup closes every open file and removes the folder.
func (sp *spiller) cleanup() error {
	var errs []error
	for f := range sp.open {
		if err := f.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spill file %s: %w", f.path, err))
		}
	}
	sp.open = nil
	if sp.dir != "" {
		if err := os.RemoveAll(sp.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove spill folder: %w", err))
		}
		sp.dir = ""
	}
	return errors.Join(errs...)
}

func (sp *spiller) writeHash(f *spillFile, h uint64, row int64) error {
	b := binary.LittleEndian.AppendUint64(f.scratch[:0], h)
	return sp.put(f, b, nil, row)
}

func (sp *spiller) writeString(f *spillFile, k []byte, row int64) error {
	b := binary.AppendUvarint(f.scratch[:0], uint64(len(k)))
	f.keyBytes += int64(len(k))
	return sp.put(f, b, k, row)
}

func (sp *spiller) put(f *spillFile, head, key []byte, row int64) error {
	n := len(head) + len(key)
	if _, err := f.w.Write(head); err != nil {
		return fmt.Errorf("spill file %s: %w", f.path, err)
	}
	if len(key) > 0 {
		if _, err := f.w.Write(key); err != nil {
			return fmt.Errorf("spill file %s: %w", f.path, err)
		}
	}
	if f.rows {
		b := binary.AppendUvarint(f.scratch[:0], uint64(row-f.last))
		f.last = row
		if _, err := f.w.Write(b); err != nil {
			return fmt.Errorf("spill file %s: %w", f.path, err)
		}
		n += len(b)
	}
	f.n++
	sp.written += int64(n)
	return nil
}

// spillReader reads the records of a finished spill file back.
type spillReader struct {
	f    *os.File
	r    *bufio.Reader
	kind keyKind
	seed maphash.Seed
	rows bool
	last int64
	key  []byte
}

func openSpill(f *spillFile, kind keyKind, seed maphash.Seed, bufSize int) (*spillReader, error) {
	fd, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spillReader{f: fd, r: bufio.NewReaderSize(fd, bufSize), kind: kind, seed: seed, rows: f.rows}, nil
}

func (r *spillReader) close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	return nil
}

// next reads a record: the key's hash (a long's image), a string key's
// bytes (valid until the next call) and the row. It returns io.EOF after
// the last record.
func (r *spillReader) next() (h uint64, key []byte, row int64, err error) {
	if r.kind == kindInt {
		var b [8]byte
		if _, err := io.ReadFull(r.r, b[:]); err != nil {
			return 0, nil, 0, r.fail(err)
		}
		h = binary.LittleEndian.Uint64(b[:])
	} else {
		n, err := binary.ReadUvarint(r.r)
		if err != nil {
			return 0, nil, 0, r.fail(err)
		}
		if n > maxArena {
			return 0, nil, 0, fmt.Errorf("spill file %s: key of %d bytes", r.f.Name(), n)
		}
		if uint64(cap(r.key)) < n {
			r.key = make([]byte, n)
		}
		r.key = r.key[:n]
		if _, err := io.ReadFull(r.r, r.key); err != nil {
			return 0, nil, 0, r.fail(noEOF(err))
		}
		key = r.key
		h = maphash.Bytes(r.seed, key)
	}
	if r.rows {
		d, err := binary.ReadUvarint(r.r)
		if err != nil {
			return 0, nil, 0, r.fail(noEOF(err))
		}
		r.last += int64(d)
		row = r.last
	}
	return h, key, row, nil
}

// fail passes io.EOF at a record's start on and names the file otherwise.
func (r *spillReader) fail(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("spill file %s: %w", r.f.Name(), err)
}

// noEOF turns an end of file inside a record into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
