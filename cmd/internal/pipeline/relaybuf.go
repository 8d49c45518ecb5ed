package pipeline

// eventArena copies a stream's events into shared slabs, so relaying an
// event costs no allocation of its own: the call keeps every event until
// it ends, so the copies live as long as the slabs anyway.
type eventArena struct {
	slab []byte
}

// eventSlab is the size of one slab: a few dozen typical chunks.
const eventSlab = 4 << 10

// copy returns a copy of raw, capped so an append to it cannot reach the
// next event.
func (a *eventArena) copy(raw []byte) []byte {
	if len(raw) > cap(a.slab)-len(a.slab) {
		if len(raw) > eventSlab/4 {
			return append([]byte(nil), raw...) // a large event: its own allocation
		}
		a.slab = make([]byte, 0, eventSlab)
	}
	start := len(a.slab)
	a.slab = append(a.slab, raw...)
	return a.slab[start:len(a.slab):len(a.slab)]
}
