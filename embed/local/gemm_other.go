//go:build !amd64 || purego

package local

const (
	kernelGeneric = iota
)

var (
	bestKernel = kernelGeneric
	useKernel  = bestKernel
)

func kernelName(int) string { return "go" }

func mulAddKernel(w *matrix, c []float32, ldc int, a []float32, lda, rows int, scratch []float32, relu bool) {
	mulAddGeneric(w, c, ldc, a, lda, rows, scratch, relu)
}

var (
	hasVNNI = false
	useVNNI = false
)

func quantizeRowsKernel(q *qrows, a []float32, lda int) { quantizeRowsGeneric(q, a, lda) }

func mulAddQKernel(w *qmatrix, c []float32, ldc int, a *qrows, relu bool) {
	mulAddQGeneric(w, c, ldc, a, relu)
}

func softmaxAVX512(*float32, int, float32) { panic("local: no assembly softmax") }
