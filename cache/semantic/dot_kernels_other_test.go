//go:build !amd64

package semantic

// i8Kernels returns every int8 kernel this CPU can run, by name.
func i8Kernels() map[string]func([]int16, []int8) int32 {
	return map[string]func([]int16, []int8) int32{"go": dotI8Generic, "dispatch": dotI8}
}
