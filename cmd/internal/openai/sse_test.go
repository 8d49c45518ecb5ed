package openai

import (
	"net/http"
	"testing"
)

func TestIsEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                true,
		"text/event-stream; charset=utf-8": true,
		"Text/Event-Stream":                true,
		" text/event-stream ;x=1":          true,
		"application/json":                 false,
		"":                                 false,
		"text/event-streams":               false,
		"text/event":                       false,
	} {
		if got := IsEventStream(http.Header{"Content-Type": {ct}}); got != want {
			t.Errorf("IsEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}
