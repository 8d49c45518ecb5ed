package semantic

// i8Kernels returns every int8 kernel this CPU can run, by name.
func i8Kernels() map[string]func([]int16, []int8) int32 {
	ks := map[string]func([]int16, []int8) int32{"go": dotI8Generic, "dispatch": dotI8}
	call := func(f func(*int16, *int8, int) int32) func([]int16, []int8) int32 {
		return func(a []int16, b []int8) int32 {
			if len(a) == 0 {
				return 0
			}
			return f(&a[0], &b[0], len(a))
		}
	}
	if useVNNI {
		ks["avx512vnni"] = call(dotI8VNNI)
	}
	if useI8AVX2 {
		ks["avx2"] = call(dotI8AVX2)
	}
	return ks
}

// i8i8Kernels is i8Kernels for the int8·int8 product.
func i8i8Kernels() map[string]func([]int8, []int8) int32 {
	ks := map[string]func([]int8, []int8) int32{"go": dotI8I8Generic, "dispatch": dotI8I8}
	call := func(f func(*int8, *int8, int) int32) func([]int8, []int8) int32 {
		return func(a, b []int8) int32 {
			if len(a) == 0 {
				return 0
			}
			return f(&a[0], &b[0], len(a))
		}
	}
	if useVNNI {
		ks["avx512vnni"] = call(dotI8I8VNNI)
	}
	if useI8AVX2 {
		ks["avx2"] = call(dotI8I8AVX2)
	}
	return ks
}
