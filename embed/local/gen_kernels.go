//go:build ignore

// gen_kernels writes kernels_amd64.s, the matmul micro-kernels of the local
// embedder: run `go generate ./embed/local/` after editing it.
//
// Each kernel adds a·b to a block of c and optionally clamps the result at 0
// (ReLU):
//
//	func name(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)
//
// a is mr rows of k values with row stride lda, b is packed column panels of
// 16 (see matrix in gemm.go) and c has row stride ldc. Row r of a is
// addressed as base + r·lda with x86 scaled-index addressing from two base
// registers (rows 0–7 and 8–13) and the multiples 1, 3, 5 and 7 of lda, so
// a needs no packing. AVX-512 kernels handle 1–14 rows × 32 columns (two panels; 28 ZMM
// accumulators at most); AVX2+FMA kernels handle 1–6 rows × 16 columns (one
// panel; 12 YMM accumulators at most). Each step of the k loop loads one row
// of the panels, broadcasts one element per row of a and multiplies them in
// with FMA.
//
// The int8 path adds VNNI kernels of the same shape (1–14 rows × 32
// columns, VPDPBUSD on 4 bytes of k per step; see vnniKernel), the
// activation quantisers and an AVX-512 softmax.
package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
)

var out bytes.Buffer

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }

func header(name string) {
	fmt.Fprintf(&out, "\n// func %s(k int, a *float32, lda int, b *float32, c *float32, ldc int, relu int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-56\n", name)
	p("MOVQ k+0(FP), CX")
	p("MOVQ a+8(FP), SI")
	p("MOVQ lda+16(FP), R8")
	p("SHLQ $2, R8")
	p("LEAQ (R8)(R8*2), R9")  // 3·lda
	p("LEAQ (R8)(R8*4), R10") // 5·lda
	p("LEAQ (R9)(R8*4), R11") // 7·lda
	p("LEAQ (SI)(R8*8), BX")  // row 8
	p("MOVQ b+24(FP), DI")
}

// rowAddr is the address of row r's current element.
func rowAddr(r int) string {
	base := "SI"
	if r >= 8 {
		base, r = "BX", r-8
	}
	return [...]string{
		"(" + base + ")",
		"(" + base + ")(R8*1)",
		"(" + base + ")(R8*2)",
		"(" + base + ")(R9*1)",
		"(" + base + ")(R8*4)",
		"(" + base + ")(R10*1)",
		"(" + base + ")(R9*2)",
		"(" + base + ")(R11*1)",
	}[r]
}

// kernel writes one kernel: vec is the register prefix ("Z" or "Y"), width
// the bytes of one register, regs the accumulators per row, acc0 the first
// accumulator register.
func kernel(name string, mr int, vec string, width, regs, acc0 int) {
	header(name)
	acc := func(r, j int) string { return fmt.Sprintf("%s%d", vec, acc0+regs*r+j) }
	// Panel j of the block: DI + j*k*64 for AVX-512 (two panels), or
	// DI + j*32 within one panel for AVX2.
	if regs == 2 && vec == "Z" {
		p("MOVQ CX, R13")
		p("SHLQ $6, R13")
		p("ADDQ DI, R13")
	}
	for r := 0; r < mr; r++ {
		for j := 0; j < regs; j++ {
			p("VXORPS %s, %s, %s", acc(r, j), acc(r, j), acc(r, j))
		}
	}
	p("TESTQ CX, CX")
	p("JEQ done")
	fmt.Fprintf(&out, "loop:\n")
	if vec == "Z" {
		p("VMOVUPS (DI), Z0")
		p("VMOVUPS (R13), Z1")
	} else {
		p("VMOVUPS (DI), Y0")
		p("VMOVUPS 32(DI), Y1")
	}
	for r := 0; r < mr; r++ {
		bc := fmt.Sprintf("%s%d", vec, 2+r%2)
		p("VBROADCASTSS %s, %s", rowAddr(r), bc)
		for j := 0; j < regs; j++ {
			p("VFMADD231PS %s%d, %s, %s", vec, j, bc, acc(r, j))
		}
	}
	p("ADDQ $4, SI")
	if mr > 8 {
		p("ADDQ $4, BX")
	}
	p("ADDQ $64, DI")
	if vec == "Z" {
		p("ADDQ $64, R13")
	}
	p("DECQ CX")
	p("JNE loop")
	fmt.Fprintf(&out, "done:\n")
	p("MOVQ c+32(FP), DI")
	p("MOVQ ldc+40(FP), R13")
	p("SHLQ $2, R13")
	for r := 0; r < mr; r++ {
		if r > 0 {
			p("ADDQ R13, DI")
		}
		for j := 0; j < regs; j++ {
			p("VADDPS %d(DI), %s, %s", width*j, acc(r, j), acc(r, j))
		}
	}
	p("MOVQ relu+48(FP), AX")
	p("TESTQ AX, AX")
	p("JEQ store")
	p("VXORPS %s0, %s0, %s0", vec, vec, vec)
	for r := 0; r < mr; r++ {
		for j := 0; j < regs; j++ {
			p("VMAXPS %s0, %s, %s", vec, acc(r, j), acc(r, j))
		}
	}
	fmt.Fprintf(&out, "store:\n")
	p("MOVQ c+32(FP), DI")
	for r := 0; r < mr; r++ {
		if r > 0 {
			p("ADDQ R13, DI")
		}
		for j := 0; j < regs; j++ {
			p("VMOVUPS %s, %d(DI)", acc(r, j), width*j)
		}
	}
	p("VZEROUPPER")
	p("RET")
}

// vnniKernel writes one int8 kernel (AVX-512 VNNI):
//
//	func name(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)
//
// a is mr rows of 4·k4 quantised activations (unsigned bytes, row stride lda
// bytes), b two int8 panels packed by packQMatrix (16 columns × 4 values of
// k per 64 bytes). The int32 accumulators start at corr (the offset
// correction of the 32 columns); each step broadcasts 4 bytes of each row
// and multiplies them in with VPDPBUSD. The epilogue converts to float32 and
// adds float32(acc)·(as[r]·ws[j]) to c, then clamps at 0 with relu. The
// loop is gemmAVX512's with bytes for floats: 4 values of k per step.
func vnniKernel(name string, mr int) {
	fmt.Fprintf(&out, "\n// func %s(k4 int, a *uint8, lda int, b *int8, c *float32, ldc int, relu int, corr *int32, ws *float32, as *float32)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-80\n", name)
	p("MOVQ k4+0(FP), CX")
	p("MOVQ a+8(FP), SI")
	p("MOVQ lda+16(FP), R8")
	p("LEAQ (R8)(R8*2), R9")  // 3·lda
	p("LEAQ (R8)(R8*4), R10") // 5·lda
	p("LEAQ (R9)(R8*4), R11") // 7·lda
	p("LEAQ (SI)(R8*8), BX")  // row 8
	p("MOVQ b+24(FP), DI")
	p("MOVQ CX, R13")
	p("SHLQ $6, R13")
	p("ADDQ DI, R13")
	acc := func(r, j int) string { return fmt.Sprintf("Z%d", 4+2*r+j) }
	p("MOVQ corr+56(FP), AX")
	p("VMOVDQU32 (AX), Z0")
	p("VMOVDQU32 64(AX), Z1")
	for r := 0; r < mr; r++ {
		p("VMOVDQA32 Z0, %s", acc(r, 0))
		p("VMOVDQA32 Z1, %s", acc(r, 1))
	}
	p("TESTQ CX, CX")
	p("JEQ done")
	fmt.Fprintf(&out, "loop:\n")
	p("VMOVDQU32 (DI), Z0")
	p("VMOVDQU32 (R13), Z1")
	for r := 0; r < mr; r++ {
		bc := fmt.Sprintf("Z%d", 2+r%2)
		p("VPBROADCASTD %s, %s", rowAddr(r), bc)
		p("VPDPBUSD Z0, %s, %s", bc, acc(r, 0))
		p("VPDPBUSD Z1, %s, %s", bc, acc(r, 1))
	}
	p("ADDQ $4, SI")
	if mr > 8 {
		p("ADDQ $4, BX")
	}
	p("ADDQ $64, DI")
	p("ADDQ $64, R13")
	p("DECQ CX")
	p("JNE loop")
	fmt.Fprintf(&out, "done:\n")
	p("MOVQ ws+64(FP), AX")
	p("VMOVUPS (AX), Z0")
	p("VMOVUPS 64(AX), Z1")
	p("MOVQ as+72(FP), AX")
	p("MOVQ c+32(FP), DI")
	p("MOVQ ldc+40(FP), R13")
	p("SHLQ $2, R13")
	for r := 0; r < mr; r++ {
		if r > 0 {
			p("ADDQ R13, DI")
		}
		p("VBROADCASTSS %d(AX), Z2", 4*r)
		for j := 0; j < 2; j++ {
			p("VMULPS Z%d, Z2, Z3", j)
			p("VCVTDQ2PS %s, %s", acc(r, j), acc(r, j))
			p("VMULPS Z3, %s, %s", acc(r, j), acc(r, j))
			p("VADDPS %d(DI), %s, %s", 64*j, acc(r, j), acc(r, j))
		}
	}
	p("MOVQ relu+48(FP), AX")
	p("TESTQ AX, AX")
	p("JEQ store")
	p("VXORPS Z0, Z0, Z0")
	for r := 0; r < mr; r++ {
		for j := 0; j < 2; j++ {
			p("VMAXPS Z0, %s, %s", acc(r, j), acc(r, j))
		}
	}
	fmt.Fprintf(&out, "store:\n")
	p("MOVQ c+32(FP), DI")
	for r := 0; r < mr; r++ {
		if r > 0 {
			p("ADDQ R13, DI")
		}
		for j := 0; j < 2; j++ {
			p("VMOVUPS %s, %d(DI)", acc(r, j), 64*j)
		}
	}
	p("VZEROUPPER")
	p("RET")
}

// quantKernels writes the activation quantisers (AVX-512F/BW/VL; n is a
// multiple of 16):
//
//	func absMaxAVX512(x *float32, n int) float32 // max |x[i]|
//	func quantAVX512(x *float32, n int, inv float32, dst *uint8, offset int)
//
// quantAVX512 writes round-to-even(x[i]·inv) saturated to int8 plus 128
// (offset ≠ 0), or saturated to uint8 (offset = 0, for x ≥ 0).
func quantKernels() {
	out.WriteString("\n// func absMaxAVX512(x *float32, n int) float32\n")
	out.WriteString("TEXT ·absMaxAVX512(SB), NOSPLIT, $0-20\n")
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	p("VXORPS Z0, Z0, Z0")
	p("VXORPS Z1, Z1, Z1")
	p("VXORPS Z2, Z2, Z2")
	p("TESTQ CX, CX")
	p("JEQ done")
	out.WriteString("loop:\n")
	p("VMOVUPS (SI), Z3")
	p("VMAXPS Z3, Z0, Z0")
	p("VMINPS Z3, Z1, Z1")
	p("ADDQ $64, SI")
	p("SUBQ $16, CX")
	p("JNE loop")
	out.WriteString("done:\n")
	p("VSUBPS Z1, Z2, Z1") // −min
	p("VMAXPS Z1, Z0, Z0")
	p("VEXTRACTF64X4 $1, Z0, Y1")
	p("VMAXPS Y1, Y0, Y0")
	p("VEXTRACTF128 $1, Y0, X1")
	p("VMAXPS X1, X0, X0")
	p("VPERMILPS $0x4E, X0, X1")
	p("VMAXPS X1, X0, X0")
	p("VPERMILPS $0xB1, X0, X1")
	p("VMAXPS X1, X0, X0")
	p("VMOVSS X0, ret+16(FP)")
	p("VZEROUPPER")
	p("RET")

	out.WriteString("\n// func quantAVX512(x *float32, n int, inv float32, dst *uint8, offset int)\n")
	out.WriteString("TEXT ·quantAVX512(SB), NOSPLIT, $0-40\n")
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	p("VBROADCASTSS inv+16(FP), Z0")
	p("MOVQ dst+24(FP), DI")
	p("MOVQ offset+32(FP), AX")
	p("TESTQ CX, CX")
	p("JEQ done")
	p("TESTQ AX, AX")
	p("JEQ unsigned")
	p("MOVL $0x80808080, AX")
	p("VPBROADCASTD AX, X3")
	out.WriteString("signed:\n")
	p("VMULPS (SI), Z0, Z1")
	p("VCVTPS2DQ Z1, Z1")
	p("VPMOVSDB Z1, X1")
	p("VPXORD X3, X1, X1")
	p("VMOVDQU X1, (DI)")
	p("ADDQ $64, SI")
	p("ADDQ $16, DI")
	p("SUBQ $16, CX")
	p("JNE signed")
	p("JMP done")
	out.WriteString("unsigned:\n")
	p("VMULPS (SI), Z0, Z1")
	p("VCVTPS2DQ Z1, Z1")
	p("VPMOVUSDB Z1, X1")
	p("VMOVDQU X1, (DI)")
	p("ADDQ $64, SI")
	p("ADDQ $16, DI")
	p("SUBQ $16, CX")
	p("JNE unsigned")
	out.WriteString("done:\n")
	p("VZEROUPPER")
	p("RET")
}

// softmaxKernel writes
//
//	func softmaxAVX512(x *float32, n int, scale float32)
//
// which replaces the n values of x (a multiple of 16) by softmax(scale·x):
// scale, subtract the maximum, exponentiate with a degree-6 polynomial on
// the reduced argument (Cephes expf: about 1 ulp) and VSCALEFPS for the
// power of two, divide by the sum. Values of −Inf become 0.
func softmaxKernel() {
	f32 := func(v float64) string { return fmt.Sprintf("$0x%08x", math.Float32bits(float32(v))) }
	bcast := func(v float64, reg string) {
		p("MOVL %s, AX", f32(v))
		p("VPBROADCASTD AX, %s", reg)
	}
	reduce := func(op string) { // Z0 → all lanes of Z0
		p("VSHUFF32X4 $0x4E, Z0, Z0, Z1")
		p("%s Z1, Z0, Z0", op)
		p("VSHUFF32X4 $0xB1, Z0, Z0, Z1")
		p("%s Z1, Z0, Z0", op)
		p("VPERMILPS $0x4E, Z0, Z1")
		p("%s Z1, Z0, Z0", op)
		p("VPERMILPS $0xB1, Z0, Z1")
		p("%s Z1, Z0, Z0", op)
	}
	out.WriteString("\n// func softmaxAVX512(x *float32, n int, scale float32)\n")
	out.WriteString("TEXT ·softmaxAVX512(SB), NOSPLIT, $0-20\n")
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	p("TESTQ CX, CX")
	p("JEQ done")
	p("VBROADCASTSS scale+16(FP), Z2")
	bcast(math.Inf(-1), "Z0")
	p("MOVQ SI, DI")
	p("MOVQ CX, DX")
	out.WriteString("max:\n")
	p("VMULPS (DI), Z2, Z1")
	p("VMOVUPS Z1, (DI)")
	p("VMAXPS Z1, Z0, Z0")
	p("ADDQ $64, DI")
	p("SUBQ $16, DX")
	p("JNE max")
	reduce("VMAXPS")
	p("VMOVAPS Z0, Z2") // the maximum
	bcast(math.Log2E, "Z3")
	bcast(-0.693359375, "Z4")     // −ln2, high part
	bcast(2.12194440e-4, "Z5")    // −ln2, low part
	bcast(-87.33654, "Z6")        // below this exp underflows
	bcast(1.9875691500e-4, "Z7")  // polynomial coefficients
	bcast(1.3981999507e-3, "Z8")  //
	bcast(8.3334519073e-3, "Z9")  //
	bcast(4.1665795894e-2, "Z10") //
	bcast(1.6666665459e-1, "Z11") //
	bcast(5.0000001201e-1, "Z12") //
	bcast(1, "Z13")               //
	p("VXORPS Z0, Z0, Z0")        // the sum
	p("MOVQ SI, DI")
	p("MOVQ CX, DX")
	out.WriteString("exp:\n")
	p("VMOVUPS (DI), Z14")
	p("VSUBPS Z2, Z14, Z14")      // x − max ≤ 0
	p("VMAXPS Z6, Z14, Z15")      // clamped
	p("VMULPS Z3, Z15, Z16")      // x·log2 e
	p("VRNDSCALEPS $0, Z16, Z16") // n, rounded to nearest
	p("VFMADD231PS Z4, Z16, Z15") // f = x − n·ln2 (high)
	p("VFMADD231PS Z5, Z16, Z15") //   (low)
	p("VMOVAPS Z7, Z17")
	p("VFMADD213PS Z8, Z15, Z17")
	p("VFMADD213PS Z9, Z15, Z17")
	p("VFMADD213PS Z10, Z15, Z17")
	p("VFMADD213PS Z11, Z15, Z17")
	p("VFMADD213PS Z12, Z15, Z17")
	p("VMULPS Z15, Z15, Z18")      // f²
	p("VFMADD213PS Z15, Z18, Z17") // p·f² + f
	p("VADDPS Z13, Z17, Z17")      // + 1
	p("VSCALEFPS Z16, Z17, Z17")   // ·2ⁿ
	p("VCMPPS $1, Z6, Z14, K1")    // x < −87.3: 0
	p("VXORPS Z18, Z18, Z18")
	p("VMOVAPS Z18, K1, Z17")
	p("VMOVUPS Z17, (DI)")
	p("VADDPS Z17, Z0, Z0")
	p("ADDQ $64, DI")
	p("SUBQ $16, DX")
	p("JNE exp")
	reduce("VADDPS")
	p("VDIVPS Z0, Z13, Z0") // 1/sum
	out.WriteString("norm:\n")
	p("VMULPS (SI), Z0, Z1")
	p("VMOVUPS Z1, (SI)")
	p("ADDQ $64, SI")
	p("SUBQ $16, CX")
	p("JNE norm")
	out.WriteString("done:\n")
	p("VZEROUPPER")
	p("RET")
}

func main() {
	out.WriteString("// Code generated by gen_kernels.go; DO NOT EDIT.\n\n//go:build amd64 && !purego\n\n#include \"textflag.h\"\n")
	for mr := 1; mr <= 14; mr++ {
		kernel(fmt.Sprintf("gemmAVX512x%d", mr), mr, "Z", 64, 2, 4)
	}
	for mr := 1; mr <= 6; mr++ {
		kernel(fmt.Sprintf("gemmAVX2x%d", mr), mr, "Y", 32, 2, 4)
	}
	for mr := 1; mr <= 14; mr++ {
		vnniKernel(fmt.Sprintf("gemmVNNIx%d", mr), mr)
	}
	quantKernels()
	softmaxKernel()
	if err := os.WriteFile("kernels_amd64.s", out.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
