package eval

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/edgecache/edgecache/embed"
)

// diskCache wraps an embedder with an append-only file of vectors keyed by
// a hash of the text, so that repeated evaluation runs (tuning loops) embed
// each text once. One file per embedder name: vectors of different models
// never mix. It is a tool for evaluation, not for serving. An embedder
// that learns its dimension from its first answer (remote, Dim 0 until
// then) takes the file's: a run whose texts are all in the file needs no
// call at all.
//
// File format: records of a 16-byte key (the first half of the text's
// SHA-256), a little-endian uint32 dimension and that many little-endian
// float32 values. A truncated last record (an interrupted run) is ignored
// and overwritten.
type diskCache struct {
	inner embed.Embedder

	mu   sync.Mutex
	vecs map[[16]byte]embed.Vector
	dim  int // of the records: the embedder's, or the file's while it states none
	f    *os.File
	w    *bufio.Writer
}

var (
	_ embed.Embedder = (*diskCache)(nil)
	_ embed.Coverer  = (*diskCache)(nil)
	_ embed.Spacer   = (*diskCache)(nil)
)

// openDiskCache keeps inner's vectors in dir, in a file named for
// inner.Name() and suffix (vectors of one name computed another way, such
// as USE-lite's int8 path, go to a file of their own).
func openDiskCache(dir string, inner embed.Embedder, suffix string) (*diskCache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' {
			return '_'
		}
		return r
	}, inner.Name()+suffix)
	path := filepath.Join(dir, name+".vec")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	d := &diskCache{inner: inner, vecs: make(map[[16]byte]embed.Vector), f: f}
	d.dim = inner.Dim()
	good, err := d.load()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("embedding cache %s: %w", path, err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	d.w = bufio.NewWriterSize(f, 1<<20)
	return d, nil
}

// load reads every complete record and returns the offset after the last.
// With d.dim 0 it takes the first record's.
func (d *diskCache) load() (int64, error) {
	r := bufio.NewReaderSize(d.f, 1<<20)
	var off int64
	var head [20]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return off, nil // EOF or a truncated record
		}
		n := int(binary.LittleEndian.Uint32(head[16:]))
		if d.dim == 0 {
			d.dim = n
		}
		if n != d.dim {
			return 0, fmt.Errorf("record of dimension %d, embedder has %d", n, d.dim)
		}
		buf := make([]byte, 4*n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return off, nil
		}
		v := make(embed.Vector, n)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		var k [16]byte
		copy(k[:], head[:16])
		d.vecs[k] = v
		off += int64(len(head) + len(buf))
	}
}

func textKey(s string) [16]byte {
	h := sha256.Sum256([]byte(s))
	var k [16]byte
	copy(k[:], h[:16])
	return k
}

func (d *diskCache) Name() string { return d.inner.Name() }

// Dim implements embed.Embedder: the embedder's, or the file's before
// the embedder knows its own.
func (d *diskCache) Dim() int {
	if n := d.inner.Dim(); n != 0 {
		return n
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dim
}

// Coverage implements embed.Coverer for the wrapped embedder: caching
// vectors does not change what the model represents.
func (d *diskCache) Coverage(text string) float64 { return embed.CoverageOf(d.inner, text) }

// Space implements embed.Spacer for the wrapped embedder.
func (d *diskCache) Space(text string) (string, float64) { return embed.SpaceOf(d.inner, text) }

// Embed answers known texts from the file and embeds (and appends) the rest.
func (d *diskCache) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	out := make([]embed.Vector, len(texts))
	var missing []string
	var at []int
	d.mu.Lock()
	for i, t := range texts {
		if v, ok := d.vecs[textKey(t)]; ok {
			out[i] = v
			continue
		}
		missing, at = append(missing, t), append(at, i)
	}
	d.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	vs, err := d.inner.Embed(ctx, missing)
	if err != nil {
		return nil, err
	}
	if len(vs) != len(missing) {
		return nil, errors.New("embedding cache: embedder returned the wrong number of vectors")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dim == 0 && len(vs) > 0 {
		d.dim = len(vs[0])
	}
	for _, v := range vs {
		if len(v) != d.dim {
			return nil, fmt.Errorf("embedding cache %s: the embedder answered vectors of dimension %d, the file holds %d (another model under the same name? remove the file)",
				d.f.Name(), len(v), d.dim)
		}
	}
	var rec []byte
	for j, v := range vs {
		out[at[j]] = v
		k := textKey(missing[j])
		if _, ok := d.vecs[k]; ok {
			continue
		}
		d.vecs[k] = v
		rec = append(rec[:0], k[:]...)
		rec = binary.LittleEndian.AppendUint32(rec, uint32(len(v)))
		for _, x := range v {
			rec = binary.LittleEndian.AppendUint32(rec, math.Float32bits(x))
		}
		if _, err := d.w.Write(rec); err != nil {
			return nil, fmt.Errorf("embedding cache: %w", err)
		}
	}
	if err := d.w.Flush(); err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	return out, nil
}

// Close flushes and closes the file.
func (d *diskCache) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.w.Flush()
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	return err
}
