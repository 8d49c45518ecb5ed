package app

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgecache/edgecache/cache"
)

// tracedTier gives each cache tier lookup its own span (only built when
// tracing is on).
type tracedTier struct {
	cache.Tier
	name   string
	tracer trace.Tracer
}

var _ cache.Tier = tracedTier{}

func (t tracedTier) Get(ctx context.Context, k cache.Key) (cache.Entry, error) {
	ctx, span := t.tracer.Start(ctx, "cache."+t.name+".get", trace.WithAttributes(attribute.String("edgecache.cache.tier", t.name)))
	defer span.End()
	e, err := t.Tier.Get(ctx, k)
	switch {
	case err == nil:
		span.SetAttributes(attribute.String("edgecache.cache.result", "hit"))
	case errors.Is(err, cache.ErrMiss):
		span.SetAttributes(attribute.String("edgecache.cache.result", "miss"))
	default:
		span.SetStatus(codes.Error, err.Error())
	}
	return e, err
}

func (t tracedTier) Set(ctx context.Context, k cache.Key, e cache.Entry, ttl time.Duration) error {
	return t.Tier.Set(ctx, k, e, ttl)
}
