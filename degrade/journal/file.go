package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// File names in Config.Dir.
const (
	currentFile   = "edgecache-journal.jsonl"
	rotatedPrefix = "edgecache-journal-"
	rotatedSuffix = ".jsonl"
	// rotatedTime is the UTC timestamp of a rotation in a rotated file's
	// name; fixed width, so names sort by time.
	rotatedTime = "20060102T150405.000000000Z"
)

// fileSink appends JSON lines to the current file and rotates it by size.
// The writer goroutine writes; queries open the files under mu so that
// they see only whole batches.
type fileSink struct {
	dir      string
	maxBytes int64
	maxFiles int
	now      func() time.Time

	mu    sync.Mutex
	f     *os.File // nil until the first write, and after close
	size  int64
	dirty bool // written since the last fsync
	buf   bytes.Buffer
}

func newFileSink(dir string, maxBytes int64, maxFiles int) *fileSink {
	return &fileSink{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles, now: time.Now}
}

// write appends lines, each followed by a newline, rotating the file first
// whenever the next line would take it past maxBytes (a line longer than
// maxBytes gets a file of its own). Lines between rotations are written
// with one write call. With syncNow, the file is fsynced before returning.
func (s *fileSink) write(lines [][]byte, syncNow bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	if err := s.open(); err != nil {
		return err
	}
	for _, l := range lines {
		if s.size+int64(s.buf.Len()) > 0 && s.size+int64(s.buf.Len()+len(l)+1) > s.maxBytes {
			if err := s.flush(); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
		}
		s.buf.Write(l)
		s.buf.WriteByte('\n')
	}
	if err := s.flush(); err != nil {
		return err
	}
	if syncNow {
		return s.syncLocked()
	}
	return nil
}

// open opens the current file for appending if it is not open.
func (s *fileSink) open() error {
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, currentFile), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, st.Size()
	// A line cut by a crash would swallow the first record appended: end
	// it, so that only the cut line is corrupt.
	if s.size > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, s.size-1); err == nil && last[0] != '\n' {
			s.buf.WriteByte('\n')
		}
	}
	return nil
}

// flush writes the buffer to the file.
func (s *fileSink) flush() error {
	if s.buf.Len() == 0 {
		return nil
	}
	n, err := s.f.Write(s.buf.Bytes())
	s.size += int64(n)
	s.buf.Reset()
	if n > 0 {
		s.dirty = true
	}
	if err != nil {
		// A partial line may be left; the next rotation or reader skips it.
		return err
	}
	return nil
}

// rotate syncs and renames the current file with the time of rotation,
// opens a new one and deletes the oldest rotated files beyond maxFiles.
func (s *fileSink) rotate() error {
	if err := s.syncLocked(); err != nil {
		return err
	}
	if err := s.f.Close(); err != nil {
		return err
	}
	s.f = nil
	cur := filepath.Join(s.dir, currentFile)
	t := s.now().UTC()
	var name string
	for {
		name = filepath.Join(s.dir, rotatedPrefix+t.Format(rotatedTime)+rotatedSuffix)
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			break
		}
		t = t.Add(time.Nanosecond) // same instant as the previous rotation
	}
	if err := os.Rename(cur, name); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return err
	}
	rotated, err := listRotated(s.dir)
	if err != nil {
		return err
	}
	keep := max(s.maxFiles-1, 0)
	for i := keep; i < len(rotated); i++ { // newest first
		if err := os.Remove(rotated[i].path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (s *fileSink) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncLocked()
}

func (s *fileSink) syncLocked() error {
	if s.f == nil || !s.dirty {
		return nil
	}
	s.dirty = false
	return s.f.Sync()
}

func (s *fileSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.syncLocked()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

// rotatedFile is a rotated journal file and the time it was rotated: every
// record in it was written before then.
type rotatedFile struct {
	path    string
	rotated time.Time
}

// listRotated returns the rotated files of dir, newest first. Files with
// the prefix whose time does not parse are ignored.
func listRotated(dir string) ([]rotatedFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []rotatedFile
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, rotatedPrefix) || !strings.HasSuffix(name, rotatedSuffix) {
			continue
		}
		ts := strings.TrimSuffix(strings.TrimPrefix(name, rotatedPrefix), rotatedSuffix)
		t, err := time.Parse(rotatedTime, ts)
		if err != nil {
			continue
		}
		out = append(out, rotatedFile{path: filepath.Join(dir, name), rotated: t})
	}
	slices.SortFunc(out, func(a, b rotatedFile) int { return b.rotated.Compare(a.rotated) })
	return out, nil
}

// openFile is a file opened for a query, limited to the bytes it had when
// opened, so that a batch being appended is not read half-way.
type openFile struct {
	f       *os.File
	r       io.Reader
	rotated time.Time // zero for the current file
}

// snapshot opens the current file and the rotated ones, newest first,
// while no batch is being written. The caller closes them.
func (s *fileSink) snapshot() ([]openFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []openFile
	add := func(path string, rotated time.Time) error {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // rotated away or deleted by another process
		}
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		out = append(out, openFile{f: f, r: io.LimitReader(f, st.Size()), rotated: rotated})
		return nil
	}
	fail := func(err error) ([]openFile, error) {
		for _, o := range out {
			o.f.Close()
		}
		return nil, fmt.Errorf("journal: open files: %w", err)
	}
	if err := add(filepath.Join(s.dir, currentFile), time.Time{}); err != nil {
		return fail(err)
	}
	rotated, err := listRotated(s.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	for _, r := range rotated {
		if err := add(r.path, r.rotated); err != nil {
			return fail(err)
		}
	}
	return out, nil
}
