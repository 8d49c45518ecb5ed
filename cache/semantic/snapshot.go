package semantic

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
	"unsafe"
)

// Snapshot file format, version 2. All integers little-endian; a string
// is a uint32 length and its bytes; a vector is Dim int8s and its scale,
// a float32 (see putRow: the vector is v ≈ scale·int8s).
//
//	header     "ECSEMIDX" | version u32 = 2 | dim u32 | saved-at unix ns i64 | partitions u32
//	partition  namespace, route, model, context (4 strings) | kind u8
//	  kind 0 (exact)  count u32 | count × (meta | vector)
//	  kind 1 (graph)  M u32 | M0 u32 | slots u32 | entry u32 | max level i32
//	                  slots × (level u8 | live u8 | meta if live | vector |
//	                           (level+1) × (links u32 | links × slot u32))
//	meta       key | text | expires-at unix ns i64 (MaxInt64: never) | insertion seq u64
//	trailer    "ECSEMEND" | CRC-32C u32 of every byte before it
//
// Version 1 is version 2 with float32 vectors (Dim float32s each); it is
// still read (each vector is quantised as it is loaded, and its graph's
// links are kept) and the next snapshot rewrites the file as version 2,
// a quarter of the size. Nothing else changed between the versions.
//
// Graphs are saved with their links, dead slots included (they route
// searches), so a restart does not rebuild them. Points expired by load
// time are dropped (their graph slots become dead). A file that fails any
// check is rejected whole; NewEmbedded then starts empty.
const (
	snapMagic   = "ECSEMIDX"
	snapEnd     = "ECSEMEND"
	snapVersion = 2
	maxSnapStr  = 1 << 24 // 16 MiB: far above any key or prompt we store
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Snapshot writes the index to SnapshotPath now (a temporary file in the
// same directory, synced, then renamed over the old one). Each partition is
// read-locked while it is written: searches go on, writes to that
// partition wait.
func (e *Embedded) Snapshot() error {
	if e.cfg.SnapshotPath == "" {
		return errors.New("semantic: no SnapshotPath configured")
	}
	e.snapMu.Lock()
	defer e.snapMu.Unlock()

	path := e.cfg.SnapshotPath
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("semantic snapshot: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := &snapWriter{w: bufio.NewWriterSize(f, 1<<20)}
	e.writeSnapshot(w)
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err != nil {
		return fmt.Errorf("semantic snapshot %s: %w", tmp, w.err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("semantic snapshot %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("semantic snapshot %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("semantic snapshot: %w", err)
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // best effort: makes the rename durable where supported
		d.Close()
	}
	e.snapshots.Add(1)
	return nil
}

func (e *Embedded) writeSnapshot(w *snapWriter) {
	e.mu.RLock()
	parts := make([]*partition, 0, len(e.parts))
	for _, p := range e.parts {
		parts = append(parts, p)
	}
	e.mu.RUnlock()

	w.raw([]byte(snapMagic))
	w.u32(snapVersion)
	w.u32(uint32(e.cfg.Dim))
	w.i64(e.now())
	w.u32(uint32(len(parts)))
	for _, p := range parts {
		p.mu.RLock()
		p.write(w)
		p.mu.RUnlock()
	}
	w.raw([]byte(snapEnd))
	sum := w.crc
	w.u32(sum)
}

func (p *partition) write(w *snapWriter) {
	for _, s := range []string{p.filter.Namespace, p.filter.Route, p.filter.Model, p.filter.Context} {
		w.str(s)
	}
	if p.g == nil {
		w.u8(0)
		w.u32(uint32(len(p.owners)))
		for i, o := range p.owners {
			o.en.write(w)
			w.row(p.flatRow(i), p.dim)
		}
		return
	}
	g := p.g
	w.u8(1)
	w.u32(uint32(g.m))
	w.u32(uint32(g.m0))
	w.u32(uint32(g.n))
	w.u32(g.entry)
	w.u32(uint32(int32(g.maxLevel)))
	for s := range uint32(g.n) {
		level := int(g.levels[s])
		w.u8(uint8(level))
		en := p.owners[s].en
		if en == nil {
			w.u8(0)
		} else {
			w.u8(1)
			en.write(w)
		}
		w.row(g.rowOf(s), g.dim)
		for l := 0; l <= level; l++ {
			nb := g.neighbors(s, l)
			w.u32(uint32(len(nb)))
			for _, id := range nb {
				w.u32(id)
			}
		}
	}
}

func (en *entry) write(w *snapWriter) {
	w.str(en.key())
	w.str(en.text())
	w.i64(en.exp)
	w.u64(en.seq)
}

type snapWriter struct {
	w   *bufio.Writer
	crc uint32
	buf [8]byte
	err error
}

func (w *snapWriter) raw(b []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc32.Update(w.crc, crcTable, b)
	_, w.err = w.w.Write(b)
}

func (w *snapWriter) u8(v uint8) { w.buf[0] = v; w.raw(w.buf[:1]) }
func (w *snapWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(w.buf[:4], v)
	w.raw(w.buf[:4])
}
func (w *snapWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(w.buf[:8], v)
	w.raw(w.buf[:8])
}
func (w *snapWriter) i64(v int64) { w.u64(uint64(v)) }
func (w *snapWriter) str(s string) {
	w.u32(uint32(len(s)))
	w.raw([]byte(s))
}

// row writes a stored vector: its int8s, then its scale.
func (w *snapWriter) row(row []int8, dim int) {
	x, s := getRow(row, dim)
	w.raw(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x)))
	w.u32(math.Float32bits(s))
}

// errCorrupt marks every snapshot validation failure.
var errCorrupt = errors.New("corrupt snapshot")

type snapReader struct {
	r       *bufio.Reader
	crc     uint32
	left    int64 // bytes not yet read, to bound allocations
	buf     [8]byte
	err     error
	version uint32
	floats  []float32 // version 1: a vector before quantising
}

// vecBytes is the size of one vector in the file.
func (r *snapReader) vecBytes(dim int) int64 {
	if r.version == 1 {
		return 4 * int64(dim)
	}
	return int64(dim) + 4
}

// row reads a stored vector into row (see putRow).
func (r *snapReader) row(row []int8, dim int) {
	if r.version == 1 {
		if cap(r.floats) < dim {
			r.floats = make([]float32, dim)
		}
		r.vec(r.floats[:dim])
		putRow(row, r.floats[:dim], dim)
		return
	}
	x, _ := getRow(row, dim)
	r.raw(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x)))
	s := math.Float32frombits(r.u32())
	if r.err == nil && (s < 0 || math.IsNaN(float64(s)) || math.IsInf(float64(s), 0)) {
		r.fail("vector scale %v", s)
	}
	*(*float32)(unsafe.Pointer(&row[len(row)-4])) = s
}

func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
	}
}

func (r *snapReader) raw(b []byte) {
	if r.err != nil {
		clear(b)
		return
	}
	if int64(len(b)) > r.left {
		r.fail("truncated")
		clear(b)
		return
	}
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.err = fmt.Errorf("%w: %w", errCorrupt, err)
		clear(b)
		return
	}
	r.left -= int64(len(b))
	r.crc = crc32.Update(r.crc, crcTable, b)
}

func (r *snapReader) u8() uint8 { r.raw(r.buf[:1]); return r.buf[0] }
func (r *snapReader) u32() uint32 {
	r.raw(r.buf[:4])
	return binary.LittleEndian.Uint32(r.buf[:4])
}
func (r *snapReader) u64() uint64 {
	r.raw(r.buf[:8])
	return binary.LittleEndian.Uint64(r.buf[:8])
}
func (r *snapReader) i64() int64 { return int64(r.u64()) }

func (r *snapReader) str() string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if n > maxSnapStr || int64(n) > r.left {
		r.fail("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	r.raw(b)
	return string(b)
}

func (r *snapReader) vec(dst []float32) {
	var b [4 * 64]byte
	for len(dst) > 0 && r.err == nil {
		n := min(len(dst), 64)
		r.raw(b[:4*n])
		for i := range dst[:n] {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		dst = dst[n:]
	}
}

// count reads a uint32 count of items of at least each bytes, rejecting
// one the rest of the file cannot hold.
func (r *snapReader) count(each int64) int {
	n := r.u32()
	if r.err == nil && int64(n)*each > r.left {
		r.fail("count %d exceeds the file", n)
		return 0
	}
	return int(n)
}

// loadSnapshot replaces the (empty) index's contents with the snapshot at
// path. A missing file is not an error. A panic while decoding (a check
// this reader lacks) is an error too: a bad file must never stop start-up.
func (e *Embedded) loadSnapshot(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoding panicked: %v", errCorrupt, r)
		}
	}()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	start := time.Now()
	r := &snapReader{r: bufio.NewReaderSize(f, 1<<20), left: fi.Size()}
	if err := e.readSnapshot(r); err != nil {
		return err
	}
	e.log.Info("semantic: snapshot loaded", "path", path, "points", len(e.byKey),
		"partitions", len(e.parts), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (e *Embedded) readSnapshot(r *snapReader) error {
	var magic [8]byte
	r.raw(magic[:])
	if r.err == nil && string(magic[:]) != snapMagic {
		return fmt.Errorf("%w: not a snapshot file", errCorrupt)
	}
	r.version = r.u32()
	if r.err == nil && r.version != snapVersion && r.version != 1 {
		return fmt.Errorf("%w: version %d, want 1 or %d", errCorrupt, r.version, snapVersion)
	}
	if d := r.u32(); r.err == nil && int(d) != e.cfg.Dim {
		return fmt.Errorf("snapshot has dimension %d, index has %d", d, e.cfg.Dim)
	}
	r.i64() // saved at: informational
	nparts := r.count(17)
	now := e.now()
	for range nparts {
		if r.err != nil {
			break
		}
		e.readPartition(r, now)
	}
	var end [8]byte
	r.raw(end[:])
	sum := r.crc
	stored := r.u32()
	switch {
	case r.err != nil:
		return r.err
	case string(end[:]) != snapEnd:
		return fmt.Errorf("%w: missing end marker", errCorrupt)
	case stored != sum:
		return fmt.Errorf("%w: checksum %08x, want %08x", errCorrupt, sum, stored)
	case r.left != 0:
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, r.left)
	}
	e.finishLoad()
	return nil
}

func (e *Embedded) readPartition(r *snapReader, now int64) {
	var f Filter
	f.Namespace, f.Route, f.Model, f.Context = r.str(), r.str(), r.str(), r.str()
	kind := r.u8()
	if r.err != nil {
		return
	}
	if _, dup := e.parts[f]; dup {
		r.fail("partition %v twice", f)
		return
	}
	p := &partition{filter: f, dim: e.cfg.Dim}
	vecBytes := r.vecBytes(e.cfg.Dim)
	switch kind {
	case 0:
		n := r.count(vecBytes + 24)
		row := make([]int8, rowBytes(e.cfg.Dim))
		for range n {
			en := e.readEntry(r, p)
			r.row(row, e.cfg.Dim)
			if r.err != nil {
				return
			}
			if en.exp > now && e.adopt(en) {
				en.slot = uint32(len(p.owners))
				p.owners = append(p.owners, ownerOf(en))
				p.flat = append(p.flat, row...)
				p.live++
			}
		}
	case 1:
		g := e.readGraph(r, p, now)
		if r.err != nil {
			return
		}
		p.g = g
	default:
		r.fail("partition kind %d", kind)
		return
	}
	e.parts[f] = p
}

func (e *Embedded) readGraph(r *snapReader, p *partition, now int64) *hnsw {
	m, m0 := int(r.u32()), int(r.u32())
	n := r.count(r.vecBytes(e.cfg.Dim) + 6)
	ep := r.u32()
	maxLevel := int(int32(r.u32()))
	if r.err != nil {
		return nil
	}
	if m < 2 || m > 128 || m0 != 2*m {
		r.fail("graph M %d, M0 %d", m, m0)
		return nil
	}
	g := newHNSW(e.cfg.Dim, m, e.cfg.EfConstruction, e.graphSeed.Add(1))
	g.m0 = m0
	for s := range uint32(n) {
		level := int(r.u8())
		live := r.u8()
		if r.err != nil {
			return nil
		}
		if level >= maxLevels || level > maxLevel {
			r.fail("slot %d level %d", s, level)
			return nil
		}
		var en *entry
		if live == 1 {
			en = e.readEntry(r, p)
		} else if live != 0 {
			r.fail("slot %d live flag %d", s, live)
			return nil
		}
		g.newSlot(level)
		r.row(g.rowOf(s), g.dim)
		for l := 0; l <= level; l++ {
			cnt := int(r.u32())
			if r.err != nil {
				return nil
			}
			if cnt > g.maxLinks(l) {
				r.fail("slot %d has %d links on layer %d", s, cnt, l)
				return nil
			}
			b := g.block(s, l)
			b[0] = uint32(cnt)
			for i := range cnt {
				b[1+i] = r.u32()
			}
		}
		if r.err != nil {
			return nil
		}
		if en != nil && en.exp > now && e.adopt(en) {
			en.slot = s
			p.owners = append(p.owners, ownerOf(en))
			g.live++
			p.live++
		} else {
			p.owners = append(p.owners, owner{})
			g.dead[s] = true
			g.free = append(g.free, s)
		}
	}
	// Every link must name a slot that exists on that layer, and the
	// entry point must sit on the top layer.
	for s := range uint32(n) {
		for l := 0; l <= int(g.levels[s]); l++ {
			for _, id := range g.neighbors(s, l) {
				if int(id) >= n || int(g.levels[id]) < l {
					r.fail("slot %d links to %d on layer %d", s, id, l)
					return nil
				}
			}
		}
	}
	switch {
	case n == 0 && maxLevel != -1, n > 0 && (int(ep) >= n || int(g.levels[ep]) != maxLevel):
		r.fail("graph entry %d, max level %d", ep, maxLevel)
		return nil
	}
	if n > 0 {
		g.entry, g.maxLevel = ep, maxLevel
	}
	return g
}

func (e *Embedded) readEntry(r *snapReader, p *partition) *entry {
	key := r.str()
	text := r.str()
	en := newEntry(key, text, p, r.i64(), r.u64())
	en.state = stateLinked
	return en
}

// adopt registers a loaded entry. A key seen twice (it moved between
// partitions while the snapshot was written) keeps its latest insert.
func (e *Embedded) adopt(en *entry) bool {
	if en.klen == 0 {
		return false
	}
	if old := e.byKey[en.key()]; old != nil {
		if old.seq >= en.seq {
			return false
		}
		old.state = stateRemoved // finishLoad drops it from its partition
	}
	e.byKey[en.key()] = en
	e.seq = max(e.seq, en.seq)
	return true
}

// finishLoad drops entries superseded during load, counts members, builds
// the expiry heap and fits each partition to its size.
func (e *Embedded) finishLoad() {
	for f, p := range e.parts {
		for i, o := range p.owners {
			if o.en != nil && o.en.state == stateRemoved {
				p.owners[i] = owner{} // flat: compacted below
				if p.g != nil {
					p.g.remove(o.en.slot)
				}
				p.live--
			}
		}
		if p.g == nil {
			owners, flat := p.owners[:0], p.flat[:0]
			for i, o := range p.owners {
				if o.en != nil {
					o.en.slot = uint32(len(owners))
					owners = append(owners, o)
					flat = append(flat, p.flatRow(i)...)
				}
			}
			clear(p.owners[len(owners):])
			p.owners, p.flat = owners, flat
		}
		p.members = p.live
		switch {
		case p.live == 0:
			delete(e.parts, f)
			continue
		case p.g != nil && p.live < e.cfg.ExactBelow/2:
			p.toFlat()
		case p.g == nil && p.live >= e.cfg.ExactBelow:
			p.toGraph(e)
		case p.g != nil && (p.g.m != e.cfg.M || len(p.g.free) > p.live):
			// Saved with another M, or mostly tombstones (a graph over
			// rebuildMax keeps them while running): relink the live
			// points, in parallel, before serving.
			start, m, dead := time.Now(), p.g.m, len(p.g.free)
			p.rebuild(e)
			e.log.Info("semantic: graph rebuilt on load", "points", p.live, "saved M", m, "M", e.cfg.M,
				"dead slots", dead, "took", time.Since(start).Round(time.Millisecond))
		}
		for _, o := range p.owners {
			if o.en != nil {
				e.expiry.push(o.en)
			}
		}
	}
}
