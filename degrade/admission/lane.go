package admission

import (
	"fmt"
	"strings"
)

// A Lane is a tenant's traffic class, from the tenant's configuration.
// Higher values have priority: when something must wait or be shed, Batch
// goes first and Enterprise last. The zero value is Batch, the lowest lane,
// so a request whose lane was never set can never jump the queue.
type Lane uint8

// The lanes, lowest priority first.
const (
	Batch Lane = iota
	Free
	Paid
	Enterprise
)

// NumLanes is the number of lanes; Lane values are in [0, NumLanes).
const NumLanes = 4

var laneNames = [NumLanes]string{"batch", "free", "paid", "enterprise"}

// String returns the lane's configuration name ("batch", "free", "paid",
// "enterprise").
func (l Lane) String() string {
	if int(l) < NumLanes {
		return laneNames[l]
	}
	return fmt.Sprintf("lane(%d)", uint8(l))
}

// Valid reports whether l is one of the four lanes.
func (l Lane) Valid() bool { return int(l) < NumLanes }

// ParseLane parses a lane name, case-insensitively.
func ParseLane(s string) (Lane, error) {
	for i, n := range laneNames {
		if strings.EqualFold(s, n) {
			return Lane(i), nil
		}
	}
	return 0, fmt.Errorf("admission: unknown lane %q (want enterprise, paid, free or batch)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (l Lane) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("admission: invalid lane %d", uint8(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseLane.
func (l *Lane) UnmarshalText(b []byte) error {
	v, err := ParseLane(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
