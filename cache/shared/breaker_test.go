package shared

import "testing"

func TestBreaker(t *testing.T) {
	b := newBreaker(3)
	steps := []struct {
		op         string // "ok", "fail", "reset"
		wantOpened bool   // for "fail": did this failure open it
		wantAllow  bool
	}{
		{"fail", false, true},
		{"fail", false, true},
		{"ok", false, true}, // a success restarts the count
		{"fail", false, true},
		{"fail", false, true},
		{"fail", true, false},
		{"fail", false, false}, // already open: not opened again
		{"ok", false, false},   // only the probe closes it
		{"reset", false, true},
		{"fail", false, true},
	}
	for i, s := range steps {
		switch s.op {
		case "ok":
			b.success()
		case "fail":
			if opened := b.failure(); opened != s.wantOpened {
				t.Fatalf("step %d: failure() opened = %v, want %v", i, opened, s.wantOpened)
			}
		case "reset":
			b.reset()
		}
		if got := b.allow(); got != s.wantAllow {
			t.Fatalf("step %d (%s): allow = %v, want %v", i, s.op, got, s.wantAllow)
		}
	}
	if b.opens.Load() != 1 {
		t.Errorf("opens = %d, want 1", b.opens.Load())
	}
}
