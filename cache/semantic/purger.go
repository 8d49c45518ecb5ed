package semantic

import "context"

// A Purger removes points in bulk: an operator purging a route, or a
// tenant's namespace. Both indexes implement it; callers discover it by
// type assertion on an Index.
type Purger interface {
	// Purge removes every point whose Filter.Namespace equals namespace
	// and whose Filter.Route equals route; an empty argument matches any
	// value, so Purge(ctx, "", "") empties the index. It returns how many
	// points were removed (for Qdrant, counted just before the delete, so
	// concurrent writes can make it approximate).
	Purge(ctx context.Context, namespace, route string) (int, error)
}
