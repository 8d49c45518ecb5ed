package admission

import (
	"encoding/json"
	"testing"
)

func TestParseLane(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Lane
	}{
		{"enterprise", Enterprise}, {"Paid", Paid}, {"FREE", Free}, {"batch", Batch},
	} {
		got, err := ParseLane(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseLane(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != laneNames[tc.want] {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	for _, bad := range []string{"", "gold", "paid "} {
		if _, err := ParseLane(bad); err == nil {
			t.Errorf("ParseLane(%q): no error", bad)
		}
	}
	if !(Enterprise > Paid && Paid > Free && Free > Batch) || Lane(0) != Batch {
		t.Error("lanes are not ordered by priority with Batch as the zero value")
	}
}

func TestLaneText(t *testing.T) {
	var v struct{ Lane Lane }
	if err := json.Unmarshal([]byte(`{"Lane":"paid"}`), &v); err != nil || v.Lane != Paid {
		t.Fatalf("unmarshal: %v, %v", v.Lane, err)
	}
	b, err := json.Marshal(v)
	if err != nil || string(b) != `{"Lane":"paid"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	if _, err := json.Marshal(struct{ L Lane }{Lane(9)}); err == nil {
		t.Error("marshalled an invalid lane")
	}
}
