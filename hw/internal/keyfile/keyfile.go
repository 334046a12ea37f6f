// Package keyfile writes key material to disk without ever replacing an
// existing key and without leaving a partial file behind after a crash.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteNew writes content to path with mode 0600, creating the directory
// (0700) if needed. It writes a temporary file, syncs it, then hard-links it
// into place, which fails if path exists: the error then wraps fs.ErrExist.
func WriteNew(path string, content []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("key file %s: %w", path, fs.ErrExist)
	}
	tmp, err := writeTemp(dir, content)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("install key file: %w", err)
	}
	return syncDir(dir)
}

// Replace writes content to path with mode 0600, replacing the file there
// atomically (temporary file, sync, rename): after a crash path holds the
// old content or the new, never a part.
func Replace(path string, content []byte) error {
	dir := filepath.Dir(path)
	tmp, err := writeTemp(dir, content)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after a successful rename, nothing is left to remove
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace key file: %w", err)
	}
	return syncDir(dir)
}

// writeTemp writes content, synced, to a new 0600 file in dir and returns
// its name.
func writeTemp(dir string, content []byte) (string, error) {
	tmp, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return "", fmt.Errorf("create temporary key file: %w", err)
	}
	if err := writeSynced(tmp, content); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

func writeSynced(f *os.File, content []byte) error {
	_, werr := f.Write(content)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("write key file %s: %w", f.Name(), err)
	}
	return nil
}

// syncDir makes the new directory entry durable across power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync key directory %s: %w", dir, err)
	}
	return nil
}
