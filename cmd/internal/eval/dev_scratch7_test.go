package eval

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/local"
)

func TestDevCos(t *testing.T) {
	if os.Getenv("DEV_COS") == "" {
		t.Skip()
	}
	m, err := local.Load("/work/main/models/use-lite")
	if err != nil {
		t.Fatal(err)
	}
	pairs := [][2]string{
		{"How do I learn Python?", "How do I learn Java?"},
		{"What is the best way to learn Python?", "What is the best way to learn Java?"},
		{"What is 15 % of 80?", "What is 15 % of 90?"},
		{"What is 15% of 80?", "What is 15% of 90?"},
		{"How do I translate this sentence to French?", "How do I translate this sentence to German?"},
		{"Translate 'good morning' to French", "Translate 'good morning' to German"},
		{"Why can't I sleep at night?", "Why can I sleep at night?"},
		{"Is coffee bad for your health?", "Is coffee not bad for your health?"},
		{"Should I move to Europe?", "Should I not move to Europe?"},
		{"How does photosynthesis work?", "Why does photosynthesis work?"},
		{"How did the Roman Empire fall?", "Why did the Roman Empire fall?"},
		{"How do I reset my password?", "password reset — how?"},
		{"How do I reset my password?", "How can I reset my password?"},
		{"How do I reset my password?", "How do I reset my password"},
		{"What is the best way to learn Python?", "How do I learn Python?"},
		{"How can I lose weight quickly?", "What is the fastest way to lose weight?"},
		{"How do I learn Python quickly?", "What is the fastest way to learn Python?"},
		{"What is the capital of France?", "What's the capital city of France?"},
		{"How can I improve my English speaking skills?", "How do I improve my spoken English?"},
		{"How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"},
		{"Who is the CEO of Apple?", "Who is the CEO of Google?"},
		{"How do I install Python 3 on Windows 10?", "How do I install Python 3 on Windows 7?"},
	}
	for _, p := range pairs {
		vs, err := m.Embed(context.Background(), []string{p[0], p[1]})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%.4f\t%q\t%q\n", embed.Dot(vs[0], vs[1]), p[0], p[1])
	}
}
