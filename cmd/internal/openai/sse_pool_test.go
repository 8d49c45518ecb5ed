package openai

import (
	"io"
	"strings"
	"testing"
)

// TestEventReaderLongLinesPooled: lines far longer than the pooled 4 KiB
// buffer are read whole, and a released reader's buffer serves the next.
func TestEventReaderLongLinesPooled(t *testing.T) {
	long := strings.Repeat("x", 3*readerSize+17)
	in := "data: " + long + "\r\ndata: two\n\n: comment\ndata: [DONE]\n\n"
	for round := range 3 {
		er := NewEventReader(strings.NewReader(in))
		raw, data, err := er.Next()
		if err != nil || string(data) != long+"\ntwo" || string(raw) != "data: "+long+"\r\ndata: two\n\n" {
			t.Fatalf("round %d: first event: %v, data %d bytes", round, err, len(data))
		}
		if _, data, err = er.Next(); err != nil || string(data) != "[DONE]" {
			t.Fatalf("round %d: second event %q, %v", round, data, err)
		}
		if _, _, err = er.Next(); err != io.EOF {
			t.Fatalf("round %d: end: %v", round, err)
		}
		er.Release()
		er.Release() // harmless
	}
}
