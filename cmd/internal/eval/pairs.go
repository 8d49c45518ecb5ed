package eval

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Pair is one labelled line of a pairs file.
type Pair struct {
	Line      int  // 1-based line number in the file
	Duplicate bool // label 1: text_a and text_b ask the same thing
	A, B      string
}

// LineError is a line of a pairs file that could not be read.
type LineError struct {
	Line int
	Msg  string
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// maxBadLines bounds how many bad lines ReadPairs lists before giving up
// on the file.
const maxBadLines = 20

// ReadPairs reads `label<TAB>text_a<TAB>text_b` lines. A first line whose
// label field is not 0 or 1 is a header and is skipped. Blank lines are
// skipped; any other malformed line is reported (with its line number) in
// the returned bad list, and the file is rejected with an error when more
// than maxBadLines are bad or no pair is left. Labels 0/1 and
// "false"/"true" are accepted.
func ReadPairs(r io.Reader) (pairs []Pair, bad []LineError, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Split(line, "\t")
		label, ok := parseLabel(fields[0])
		if n == 1 && !ok {
			continue // header
		}
		switch {
		case !ok:
			bad = append(bad, LineError{n, fmt.Sprintf("label %q is not 0 or 1", clip(fields[0], 20))})
		case len(fields) != 3:
			bad = append(bad, LineError{n, fmt.Sprintf("%d tab-separated fields, want 3 (label, text_a, text_b)", len(fields))})
		case strings.TrimSpace(fields[1]) == "" || strings.TrimSpace(fields[2]) == "":
			bad = append(bad, LineError{n, "empty text"})
		default:
			pairs = append(pairs, Pair{Line: n, Duplicate: label, A: fields[1], B: fields[2]})
		}
		if len(bad) > maxBadLines {
			return nil, bad, fmt.Errorf("more than %d bad lines", maxBadLines)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, bad, fmt.Errorf("line %d: %w", n+1, err)
	}
	if len(pairs) == 0 {
		return nil, bad, errors.New("no pairs")
	}
	return pairs, bad, nil
}

func parseLabel(s string) (dup, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true":
		return true, true
	case "0", "false":
		return false, true
	}
	return false, false
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
