package eval

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line bar on a terminal, at most a few times a
// second. A nil *progress draws nothing, so callers need no checks.
type progress struct {
	w     io.Writer
	label string
	total int
	start time.Time

	mu    sync.Mutex
	done  int
	drawn int // done at the last draw
	last  time.Time
}

// newProgress returns a bar on w when w is a terminal, and nil otherwise.
func newProgress(w io.Writer, label string, total int) *progress {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok || !isTerminal(f.Fd()) || total <= 0 {
		return nil
	}
	now := time.Now()
	return &progress{w: w, label: label, total: total, start: now, last: now}
}

// Add records n more units done and redraws when due.
func (p *progress) Add(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	now := time.Now()
	if p.done < p.total && now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	p.draw(now)
}

func (p *progress) draw(now time.Time) {
	p.drawn = p.done
	const width = 30
	frac := float64(p.done) / float64(p.total)
	frac = min(max(frac, 0), 1)
	fill := int(frac * width)
	el := now.Sub(p.start)
	eta := ""
	if p.done > 0 && p.done < p.total {
		rest := time.Duration(float64(el) * (1 - frac) / frac)
		eta = " eta " + rest.Round(time.Second).String()
	}
	rate := float64(p.done) / max(el.Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r%-10s [%s%s] %d/%d %3.0f%% %.0f/s%s\x1b[K",
		p.label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		p.done, p.total, 100*frac, rate, eta)
}

// Finish ends the bar's line.
func (p *progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn != p.done {
		p.draw(time.Now())
	}
	fmt.Fprintln(p.w)
}
