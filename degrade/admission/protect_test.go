package admission

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestProtectorShedsLowestLaneFirst(t *testing.T) {
	p, err := NewProtector(ProtectConfig{MaxInFlight: 100})
	if err != nil {
		t.Fatal(err)
	}
	fill := func(n int) {
		for range n {
			if err := p.Enter(Enterprise); err != nil {
				t.Fatalf("enterprise shed at %d in flight: %v", p.Stats().InFlight, err)
			}
		}
	}
	admits := func(l Lane) bool {
		if err := p.Enter(l); err != nil {
			var re *RejectError
			if !errors.Is(err, ErrShed) || !errors.As(err, &re) || re.Reason != ReasonInFlight || re.RetryAfter != time.Second {
				t.Fatalf("%s: %v", l, err)
			}
			return false
		}
		p.Leave()
		return true
	}
	// in flight before the request → which lanes still get in
	for _, tc := range []struct {
		fill int
		want [NumLanes]bool // batch, free, paid, enterprise
	}{
		{79, [NumLanes]bool{true, true, true, true}},
		{1, [NumLanes]bool{false, true, true, true}},   // 80: batch is shed above 80 %
		{10, [NumLanes]bool{false, false, true, true}}, // 90: free above 90 %
		{5, [NumLanes]bool{false, false, false, true}}, // 95: paid above 95 %
		{5, [NumLanes]bool{false, false, false, false}},
	} {
		fill(tc.fill)
		for l := range Lane(NumLanes) {
			if got := admits(l); got != tc.want[l] {
				t.Errorf("%d in flight: %s admitted %v, want %v", p.Stats().InFlight, l, got, tc.want[l])
			}
		}
	}
	if st := p.Stats(); st.InFlight != 100 || st.Shed != [NumLanes]uint64{4, 3, 2, 1} {
		t.Fatalf("stats: %+v", st)
	}
	for range 100 {
		p.Leave()
	}
	if !admits(Batch) {
		t.Fatal("batch still shed after the load left")
	}
}

func TestProtectorMemory(t *testing.T) {
	var heap atomic.Uint64
	clk := newFakeClock()
	p, err := NewProtector(ProtectConfig{
		MaxHeapBytes: 1000,
		HeapBytes:    heap.Load,
		Clock:        clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	heap.Store(850)
	if err := p.Enter(Free); err != nil {
		t.Fatalf("free at 85%% heap: %v", err)
	}
	p.Leave()
	err = p.Enter(Batch)
	var re *RejectError
	if !errors.As(err, &re) || re.Reason != ReasonMemory {
		t.Fatalf("batch at 85%% heap: %v", err)
	}
	// The heap is sampled at most every SampleInterval.
	heap.Store(100)
	if err := p.Enter(Batch); err == nil {
		t.Fatal("heap re-read before the sample interval")
	}
	clk.Advance(DefaultSampleInterval)
	if err := p.Enter(Batch); err != nil {
		t.Fatalf("batch after the heap shrank: %v", err)
	}
	if st := p.Stats(); st.HeapBytes != 100 || st.Shed[Batch] != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProtectorRuntimeHeap(t *testing.T) {
	p, err := NewProtector(ProtectConfig{MaxHeapBytes: 1 << 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Enter(Batch); err != nil {
		t.Fatal(err)
	}
	if h := p.Stats().HeapBytes; h == 0 {
		t.Fatal("runtime/metrics heap reading is zero")
	}
}

func TestProtectorShadowAndNil(t *testing.T) {
	p, err := NewProtector(ProtectConfig{MaxInFlight: 1, Shadow: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Enter(Batch); err != nil {
			t.Fatalf("shadow mode shed: %v", err)
		}
	}
	if st := p.Stats(); st.ShadowShed[Batch] != 3 || st.Shed[Batch] != 0 || st.InFlight != 3 {
		t.Fatalf("shadow stats: %+v", st)
	}
	var none *Protector
	if err := none.Enter(Batch); err != nil {
		t.Fatal("a nil Protector shed")
	}
	none.Leave()
	_ = none.Stats()
	if _, err := NewProtector(ProtectConfig{Thresholds: [NumLanes]float64{Paid: 1.5}}); err == nil {
		t.Fatal("threshold above 1 accepted")
	}
}
