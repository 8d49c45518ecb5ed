package semantic

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestDotMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 600; n++ {
		a, b := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
		}
		var want float64
		for i := range a {
			want += float64(a[i]) * float64(b[i])
		}
		for name, got := range map[string]float32{"dot": dot(a, b), "generic": dotGeneric(a, b)} {
			if math.Abs(float64(got)-want) > 1e-4*math.Max(1, math.Sqrt(float64(n))) {
				t.Fatalf("n=%d %s = %v, want %v", n, name, got, want)
			}
		}
	}
}

func BenchmarkDot512(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	x, y := make([]float32, 512), make([]float32, 512)
	for i := range x {
		x[i], y[i] = r.Float32(), r.Float32()
	}
	b.Run("dispatch", func(b *testing.B) {
		var s float32
		for b.Loop() {
			s += dot(x, y)
		}
		_ = s
	})
	b.Run("generic", func(b *testing.B) {
		var s float32
		for b.Loop() {
			s += dotGeneric(x, y)
		}
		_ = s
	})
}

// TestDotI8MatchesGeneric checks every int8 kernel this CPU can run
// against the Go loop: integer arithmetic, so equal to the last bit, at
// every length around the kernels' block sizes and at the extreme values.
func TestDotI8MatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	kernels := i8Kernels()
	for n := 0; n <= 600; n++ {
		a, b := make([]int16, n), make([]int8, n)
		for i := range a {
			a[i], b[i] = int16(r.IntN(2*qMax+1)-qMax), int8(r.IntN(256)-128)
		}
		if n%7 == 0 { // the extremes
			for i := range a {
				a[i], b[i] = -qMax, -128
			}
		}
		want := dotI8Generic(a, b)
		var ref int64
		for i := range a {
			ref += int64(a[i]) * int64(b[i])
		}
		if int64(want) != ref {
			t.Fatalf("n=%d generic = %d, want %d", n, want, ref)
		}
		for name, k := range kernels {
			if got := k(a, b); got != want {
				t.Fatalf("n=%d %s = %d, want %d", n, name, got, want)
			}
		}
		// int8·int8: a cut to int8 range.
		a8 := make([]int8, n)
		var ref8 int64
		for i := range a {
			a8[i] = int8(a[i] >> 6)
			ref8 += int64(a8[i]) * int64(b[i])
		}
		for name, k := range i8i8Kernels() {
			if got := k(a8, b); int64(got) != ref8 {
				t.Fatalf("n=%d int8·int8 %s = %d, want %d", n, name, got, ref8)
			}
		}
	}
}

func BenchmarkDotI8_512(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	x, y := make([]int16, 512), make([]int8, 512)
	for i := range x {
		x[i], y[i] = int16(r.IntN(2*qMax+1)-qMax), int8(r.IntN(255)-127)
	}
	for name, k := range i8Kernels() {
		b.Run(name, func(b *testing.B) {
			var s int32
			for b.Loop() {
				s += k(x, y)
			}
			_ = s
		})
	}
}
