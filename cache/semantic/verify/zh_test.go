package verify

import (
	"context"
	"testing"

	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/zh"
)

func builtInZh(t *testing.T) *ZhVerifier {
	t.Helper()
	m, err := BuiltInZh()
	if err != nil {
		t.Fatalf("BuiltInZh: %v", err)
	}
	return NewZh(m)
}

// The Chinese verifier's set rules and learned differences: prompts that
// ask something else score under the degraded floor (DegradedFloor) at any cosine
// the embedder gives them, even 0.999.
func TestZhDifferentQuestionsMiss(t *testing.T) {
	v := builtInZh(t)
	pairs := [][2]string{
		{"如何重置我的密码？", "今天北京的天气怎么样？"},
		{"花呗怎么开通", "花呗怎么关闭"},                // opposite
		{"如何提高信用卡额度", "如何降低信用卡额度"},          // opposite
		{"北京到成都的火车票", "成都到北京的火车票"},          // swapped roles
		{"男人喜欢戴眼镜的女人吗", "女人喜欢戴眼镜的男人吗"},      // swapped roles
		{"顺丰快递货到付款可以验货吗", "顺丰快递货到付款不可以验货？"}, // negation
		{"苹果越狱怎么改字体", "苹果没越狱怎么改字体"},         // negation
		{"怎么开通二十元流量包", "怎么开通十元流量包"},         // numbers
		{"iphone 12 多少钱", "iphone 13 多少钱"},  // numbers
		{"借呗怎么借款", "借呗怎么还款"},                // opposite
		{"花呗最高额度是多少", "花呗最低额度是多少"},          // opposite
	}
	for _, p := range pairs {
		for _, cos := range []float32{0.9, 0.99, 0.999} {
			for _, q := range [][2]string{p, {p[1], p[0]}} {
				if s, _ := v.Score(q[0], q[1], cos); s >= DegradedFloor {
					t.Errorf("Score(%q, %q, %.3f) = %.3f, want < %.2f", q[0], q[1], cos, s, DegradedFloor)
				}
			}
		}
	}
}

// Prompts of the same wording score 1; close paraphrases pass the default
// threshold at the cosines the Chinese embedder gives them.
func TestZhParaphrasesHit(t *testing.T) {
	v := builtInZh(t)
	for _, p := range [][2]string{{"如何重置我的密码？", "如何重置 我的密码"}, {"怎么开通指纹支付", "如何开通指纹支付？"}} {
		if s, _ := v.Score(p[0], p[1], 0.6); s != 1 {
			t.Errorf("same wording %q, %q scored %.3f, want 1", p[0], p[1], s)
		}
	}
	pairs := [][2]string{
		{"人和畜生的区别是什么？", "人与畜生的区别是什么！"},
		{"怎么学好英语", "如何学好英语呢"},
	}
	e, err := zh.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		vs, _ := e.Embed(context.Background(), p[:])
		c := embed.Dot(vs[0], vs[1])
		if s, _ := v.Score(p[0], p[1], c); s < DefaultThreshold(DefaultEmbedder) {
			t.Errorf("Score(%q, %q, %.3f) = %.3f, want ≥ %.3f", p[0], p[1], c, s, DefaultThreshold(DefaultEmbedder))
		}
	}
}

// Below the model's cosine gate nothing scores above 0, which is what makes
// MinCosine a lossless pre-filter.
func TestZhCosineGate(t *testing.T) {
	v := builtInZh(t)
	gate := v.MinCosine(0.85)
	if gate <= 0 || gate >= 1 {
		t.Fatalf("MinCosine = %v", gate)
	}
	if s, _ := v.Score("花呗怎么开通", "花呗开通了怎么用", gate-0.01); s != 0 {
		t.Errorf("under the gate: score %.3f, want 0", s)
	}
}

func TestZhModelRoundTrip(t *testing.T) {
	m, _ := BuiltInZh()
	b, _ := m.MarshalBinary()
	var m2 ZhModel
	if err := m2.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if m2.Bias != m.Bias || m2.MinCosine != m.MinCosine || len(m2.Weights) != len(m.Weights) {
		t.Fatalf("round trip changed the model")
	}
	for i := range m.Weights {
		if m.Weights[i] != m2.Weights[i] {
			t.Fatalf("weight %d: %v != %v", i, m.Weights[i], m2.Weights[i])
		}
	}
	if err := m2.UnmarshalBinary(b[:len(b)-3]); err == nil {
		t.Errorf("a truncated model was accepted")
	}
}

func FuzzZhScore(f *testing.F) {
	f.Add("花呗怎么开通", "花呗怎么关闭", float32(0.9))
	f.Add("", "\xff\xfe", float32(-2))
	m, err := BuiltInZh()
	if err != nil {
		f.Fatal(err)
	}
	v := NewZh(m)
	f.Fuzz(func(t *testing.T, a, b string, cos float32) {
		s, _ := v.Score(a, b, cos)
		if !(s >= 0 && s <= 1) {
			t.Fatalf("score %v out of [0, 1]", s)
		}
	})
}

func BenchmarkZhScore(b *testing.B) {
	m, err := BuiltInZh()
	if err != nil {
		b.Fatal(err)
	}
	v := NewZh(m)
	b.ReportAllocs()
	for b.Loop() {
		v.Score("花呗怎么开通？我想用花呗付款", "如何开通花呗，我想用它付款", 0.8)
	}
}
