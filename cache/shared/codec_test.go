package shared

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache"
	"github.com/edgecache/edgecache/cache/cachetest"
)

func sampleEntry() cache.Entry {
	e := cachetest.NewEntry(time.Unix(1_700_000_000, 123456789), 10*time.Minute, []byte(`{"choices":[{"message":{"content":"hi"}}]}`))
	e.Header.Add("X-Multi", "a")
	e.Header.Add("X-Multi", "b")
	return e
}

func TestCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    cache.Entry
	}{
		{"typical", sampleEntry()},
		{"zero", cache.Entry{}},
		{"no header, empty body", cache.Entry{Status: 204, StoredAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0)}},
		{"before 1970", cache.Entry{Status: 200, StoredAt: time.Unix(-5, 7), ExpiresAt: time.Unix(0, 1)}},
		{"binary body", cache.Entry{Status: 200, Body: []byte{0, 1, 2, 0xff, '\r', '\n'}, Header: http.Header{"": {""}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(encode(tc.e))
			if err != nil {
				t.Fatalf("decode(encode(e)): %v", err)
			}
			cachetest.AssertEntry(t, got, tc.e)
			if !got.StoredAt.Equal(tc.e.StoredAt) || !got.ExpiresAt.Equal(tc.e.ExpiresAt) {
				t.Errorf("times not preserved to the nanosecond: %v %v", got.StoredAt, got.ExpiresAt)
			}
		})
	}
}

func TestCodecDeterministic(t *testing.T) {
	e := sampleEntry()
	e.Header.Set("A", "1")
	e.Header.Set("Z", "2")
	first := encode(e)
	for range 20 { // map order varies between iterations
		if !bytes.Equal(encode(e), first) {
			t.Fatal("encode is not deterministic")
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	valid := encode(sampleEntry())
	// Every strict prefix is truncated somewhere and must be rejected.
	for n := range len(valid) {
		if _, err := decode(valid[:n]); !errors.Is(err, errCorrupt) {
			t.Fatalf("decode(first %d of %d bytes) error = %v, want errCorrupt", n, len(valid), err)
		}
	}
	tests := map[string][]byte{
		"unknown version": append([]byte{codecVersion + 1}, valid[1:]...),
		"trailing bytes":  append(append([]byte(nil), valid...), 0),
		"huge status":     {codecVersion, 0xff, 0xff, 0x03},
		"header count larger than input": append(append([]byte{codecVersion, 200, 1},
			make([]byte, 16)...), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"legacy plain JSON": []byte(`{"status":200}`),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := decode(b); !errors.Is(err, errCorrupt) {
				t.Errorf("decode error = %v, want errCorrupt", err)
			}
		})
	}
}

// FuzzDecode checks that no input panics the decoder and that whatever it
// accepts encodes back to an equivalent entry.
func FuzzDecode(f *testing.F) {
	f.Add(encode(sampleEntry()))
	f.Add(encode(cache.Entry{}))
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decode(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("decode error %v does not wrap errCorrupt", err)
			}
			return
		}
		again, err := decode(encode(e))
		if err != nil {
			t.Fatalf("re-decode of an accepted value: %v", err)
		}
		cachetest.AssertEntry(t, again, e)
	})
}

func BenchmarkSharedEncodeDecode(b *testing.B) {
	e := sampleEntry()
	e.Body = bytes.Repeat([]byte("x"), 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(encode(e))))
	for b.Loop() {
		if _, err := decode(encode(e)); err != nil {
			b.Fatal(err)
		}
	}
}
