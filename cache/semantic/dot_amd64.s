#include "textflag.h"

// func dotAVX2(a, b *float32, n int) float32
//
// Four independent 8-wide FMA accumulators over 32 floats per iteration,
// then 8 at a time, then a scalar tail.
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop32:
	CMPQ CX, $32
	JL   loop8
	VMOVUPS 0(SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  loop32

loop8:
	CMPQ CX, $8
	JL   reduce
	VMOVUPS 0(SI), Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  loop8

reduce:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0

tail:
	CMPQ CX, $0
	JE   done
	VMOVSS 0(SI), X1
	VFMADD231SS 0(DI), X1, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  tail

done:
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func prefetchFloats(p *float32, n int)
//
// Asks for the n floats at p to be brought into the cache (PREFETCHT0,
// one per 64-byte line) so that a later dot product does not wait on
// memory.
TEXT ·prefetchFloats(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	SHLQ $2, CX

pf:
	CMPQ CX, $0
	JLE  pfdone
	PREFETCHT0 0(AX)
	ADDQ $64, AX
	SUBQ $64, CX
	JMP  pf

pfdone:
	RET

// func prefetchBytes(p *int8, n int)
//
// prefetchFloats for n bytes.
TEXT ·prefetchBytes(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX

pfb:
	CMPQ CX, $0
	JLE  pfbdone
	PREFETCHT0 0(AX)
	ADDQ $64, AX
	SUBQ $64, CX
	JMP  pfb

pfbdone:
	RET

// func dotI8VNNI(a *int16, b *int8, n int) int32
//
// The int16 query times the int8 stored vector: VPMOVSXBW widens 32 bytes
// of b to 32 words, VPDPWSSD multiplies them with 32 words of a and adds
// the pairs into 16 int32 lanes. Two accumulators over 64 elements per
// iteration, then 32, then a scalar tail.
TEXT ·dotI8VNNI(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI
	MOVQ n+16(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1

vloop64:
	CMPQ CX, $64
	JL   vloop32
	VPMOVSXBW 0(SI), Z2
	VPMOVSXBW 32(SI), Z3
	VPDPWSSD 0(DI), Z2, Z0
	VPDPWSSD 64(DI), Z3, Z1
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $64, CX
	JMP  vloop64

vloop32:
	CMPQ CX, $32
	JL   vreduce
	VPMOVSXBW 0(SI), Z2
	VPDPWSSD 0(DI), Z2, Z0
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $32, CX

vreduce:
	VPADDD Z1, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDD Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPADDD X1, X0, X0
	VMOVD X0, AX
	VZEROUPPER

vtail:
	CMPQ CX, $0
	JE   vdone
	MOVBLSX 0(SI), BX
	MOVWLSX 0(DI), DX
	IMULL DX, BX
	ADDL BX, AX
	INCQ SI
	ADDQ $2, DI
	DECQ CX
	JMP  vtail

vdone:
	MOVL AX, ret+24(FP)
	RET

// func dotI8AVX2(a *int16, b *int8, n int) int32
//
// dotI8VNNI with AVX2: VPMOVSXBW widens 16 bytes to 16 words, VPMADDWD
// multiplies with 16 words of a and adds pairs into 8 int32 lanes.
TEXT ·dotI8AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI
	MOVQ n+16(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1

aloop32:
	CMPQ CX, $32
	JL   aloop16
	VPMOVSXBW 0(SI), Y2
	VPMOVSXBW 16(SI), Y3
	VPMADDWD 0(DI), Y2, Y2
	VPMADDWD 32(DI), Y3, Y3
	VPADDD Y2, Y0, Y0
	VPADDD Y3, Y1, Y1
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $32, CX
	JMP  aloop32

aloop16:
	CMPQ CX, $16
	JL   areduce
	VPMOVSXBW 0(SI), Y2
	VPMADDWD 0(DI), Y2, Y2
	VPADDD Y2, Y0, Y0
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $16, CX

areduce:
	VPADDD Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPADDD X1, X0, X0
	VMOVD X0, AX
	VZEROUPPER

atail:
	CMPQ CX, $0
	JE   adone
	MOVBLSX 0(SI), BX
	MOVWLSX 0(DI), DX
	IMULL DX, BX
	ADDL BX, AX
	INCQ SI
	ADDQ $2, DI
	DECQ CX
	JMP  atail

adone:
	MOVL AX, ret+24(FP)
	RET

// func dotI8I8VNNI(a, b *int8, n int) int32
//
// dotI8VNNI with both sides int8: each is widened to words first. Used
// between stored vectors (choosing and pruning graph links).
TEXT ·dotI8I8VNNI(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI
	MOVQ n+16(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1

wloop64:
	CMPQ CX, $64
	JL   wloop32
	VPMOVSXBW 0(SI), Z2
	VPMOVSXBW 32(SI), Z3
	VPMOVSXBW 0(DI), Z4
	VPMOVSXBW 32(DI), Z5
	VPDPWSSD Z4, Z2, Z0
	VPDPWSSD Z5, Z3, Z1
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $64, CX
	JMP  wloop64

wloop32:
	CMPQ CX, $32
	JL   wreduce
	VPMOVSXBW 0(SI), Z2
	VPMOVSXBW 0(DI), Z4
	VPDPWSSD Z4, Z2, Z0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $32, CX

wreduce:
	VPADDD Z1, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDD Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPADDD X1, X0, X0
	VMOVD X0, AX
	VZEROUPPER

wtail:
	CMPQ CX, $0
	JE   wdone
	MOVBLSX 0(SI), BX
	MOVBLSX 0(DI), DX
	IMULL DX, BX
	ADDL BX, AX
	INCQ SI
	INCQ DI
	DECQ CX
	JMP  wtail

wdone:
	MOVL AX, ret+24(FP)
	RET

// func dotI8I8AVX2(a, b *int8, n int) int32
TEXT ·dotI8I8AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI
	MOVQ n+16(FP), CX
	VPXOR Y0, Y0, Y0

bloop16:
	CMPQ CX, $16
	JL   breduce
	VPMOVSXBW 0(SI), Y2
	VPMOVSXBW 0(DI), Y3
	VPMADDWD Y3, Y2, Y2
	VPADDD Y2, Y0, Y0
	ADDQ $16, SI
	ADDQ $16, DI
	SUBQ $16, CX
	JMP  bloop16

breduce:
	VEXTRACTI128 $1, Y0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPADDD X1, X0, X0
	VMOVD X0, AX
	VZEROUPPER

btail:
	CMPQ CX, $0
	JE   bdone
	MOVBLSX 0(SI), BX
	MOVBLSX 0(DI), DX
	IMULL DX, BX
	ADDL BX, AX
	INCQ SI
	INCQ DI
	DECQ CX
	JMP  btail

bdone:
	MOVL AX, ret+24(FP)
	RET
