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
		{"What is the capital of France?", "What's the capital of France?"},
		{"How can I lose weight fast?", "How do I lose weight fast?"},
		{"How can I lose weight fast?", "What is the best way to lose weight fast?"},
		{"What are the benefits of drinking green tea?", "What are the health benefits of drinking green tea?"},
		{"How do I make money online?", "How can I earn money online?"},
		{"How do I get rid of acne?", "How can I get rid of acne?"},
		{"What is the meaning of life?", "What's the meaning of life?"},
		{"How do I improve my English?", "How can I improve my English?"},
		{"What is the best way to learn guitar?", "What is the best way to learn the guitar?"},
		{"How do I reset my password?", "How do I reset my password?"},
		{"Which is the best laptop for programming?", "What is the best laptop for programming?"},
		{"How do I start a business?", "How can I start my own business?"},
		{"Why is the sky blue?", "Why is the sky blue in color?"},
	}
	for _, p := range pairs {
		vs, err := m.Embed(context.Background(), []string{p[0], p[1]})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%.4f\t%q\t%q\n", embed.Dot(vs[0], vs[1]), p[0], p[1])
	}
}
