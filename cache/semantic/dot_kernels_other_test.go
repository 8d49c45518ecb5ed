//go:build !amd64

package semantic

// i8Kernels returns every int8 kernel this CPU can run, by name.
func i8Kernels() map[string]func([]int16, []int8) int32 {
	return map[string]func([]int16, []int8) int32{"go": dotI8Generic, "dispatch": dotI8}
}

// i8i8Kernels is i8Kernels for the int8·int8 product.
func i8i8Kernels() map[string]func([]int8, []int8) int32 {
	return map[string]func([]int8, []int8) int32{"go": dotI8I8Generic, "dispatch": dotI8I8}
}
