package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
)

func TestUndoStackRunsOnceInReverseEvenWhenCanceled(t *testing.T) {
	var order []string
	var u undoStack
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, n := range []string{"a", "b", "c"} {
		u.push(n, func(ctx context.Context) error {
			if ctx.Err() != nil {
				t.Errorf("undo %s ran with a canceled context", n)
			}
			order = append(order, n)
			if n == "b" {
				return errors.New("boom")
			}
			return nil
		})
	}
	err := u.run(ctx, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("failure of step b was not reported")
	}
	if !reflect.DeepEqual(order, []string{"c", "b", "a"}) {
		t.Fatalf("order %v", order)
	}
	if err := u.run(ctx, slog.New(slog.DiscardHandler)); err != nil || len(order) != 3 {
		t.Fatal("second run ran steps again")
	}
}
