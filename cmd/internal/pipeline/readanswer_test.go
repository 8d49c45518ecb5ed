package pipeline

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// readAnswer takes a declared length at its word only as far as it holds:
// exact is read whole, short is an error, unknown grows, and a declared
// length over the bound is refused before reading.
func TestReadAnswer(t *testing.T) {
	const body = `{"choices":[]}`
	for _, c := range []struct {
		name     string
		declared int64
		want     string
		err      error
	}{
		{"declared", int64(len(body)), body, nil},
		{"unknown", -1, body, nil},
		{"short", int64(len(body)) + 5, "", io.ErrUnexpectedEOF},
		{"too large", maxAnswerBytes + 1, "", errAnswerTooLarge},
	} {
		b, err := readAnswer(strings.NewReader(body), c.declared)
		if !errors.Is(err, c.err) || string(b) != c.want {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, b, err, c.want, c.err)
		}
	}
}
