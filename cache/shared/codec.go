package shared

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/edgecache/edgecache/cache"
)

// An entry is stored in Redis as one compact binary value, so a single GET
// returns everything needed to serve it and to compute its Age and TTL:
//
//	byte     version (codecVersion)
//	uvarint  status
//	8 bytes  stored-at, unix nanoseconds, big-endian (0 = zero time)
//	8 bytes  expires-at, unix nanoseconds, big-endian (0 = zero time)
//	uvarint  number of header fields n
//	n ×      uvarint len(name), name, uvarint len(value), value
//	uvarint  len(body), body
//
// Nothing may follow the body. A multi-valued header is stored as one field
// per value, in order; names are written sorted so equal entries encode to
// equal bytes. A value whose version byte is unknown or whose structure does
// not parse is corrupt: Get treats it as a miss and counts it.
const codecVersion = 1

// maxStatus bounds the decoded status; HTTP status codes have three digits.
const maxStatus = 999

// errCorrupt reports a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt entry")

// encode returns the stored form of e. Entry.Tier is not persisted.
func encode(e cache.Entry) []byte {
	names := make([]string, 0, len(e.Header))
	size := 1 + binary.MaxVarintLen64 + 16 + binary.MaxVarintLen64
	fields := 0
	for name, vs := range e.Header {
		names = append(names, name)
		for _, v := range vs {
			size += 2*binary.MaxVarintLen64 + len(name) + len(v)
			fields++
		}
	}
	size += binary.MaxVarintLen64 + len(e.Body)
	slices.Sort(names)

	b := make([]byte, 0, size)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(max(e.Status, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(e.StoredAt)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(e.ExpiresAt)))
	b = binary.AppendUvarint(b, uint64(fields))
	for _, name := range names {
		for _, v := range e.Header[name] {
			b = appendString(b, name)
			b = appendString(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	return append(b, e.Body...)
}

// decode parses a value written by encode. The returned Body aliases b, so b
// must not be modified afterwards. Any malformed input yields an error
// wrapping errCorrupt, never a panic.
func decode(b []byte) (cache.Entry, error) {
	d := decoder{b: b}
	if v := d.byte(); v != codecVersion {
		if d.err != nil {
			return cache.Entry{}, d.err
		}
		return cache.Entry{}, fmt.Errorf("%w: version %d", errCorrupt, v)
	}
	var e cache.Entry
	status := d.uvarint()
	if status > maxStatus {
		d.fail("status")
	}
	e.Status = int(status)
	e.StoredAt = fromUnixNano(int64(d.uint64()))
	e.ExpiresAt = fromUnixNano(int64(d.uint64()))
	n := d.uvarint()
	// Each field takes at least two bytes, which bounds the allocation by
	// the input size whatever the count claims.
	if n > uint64(len(d.b))/2 {
		d.fail("header count")
	}
	if d.err == nil && n > 0 {
		e.Header = make(http.Header, min(n, 16))
		for range n {
			name, v := d.string(), d.string()
			if d.err != nil {
				break
			}
			e.Header[name] = append(e.Header[name], v)
		}
	}
	e.Body = d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return cache.Entry{}, d.err
	}
	return e, nil
}

// decoder reads the stored form; the first error sticks and makes every
// later read return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("length")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("time")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// unixNano maps the zero time to 0, which time.Time.UnixNano leaves
// undefined.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
