package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keypool/keypool/client"
)

// runEvents follows keyEvents until interrupted, resuming after the last seq it
// printed whenever the connection is lost.
func runEvents(e *env, g *globals, fs *flag.FlagSet, args []string) int {
	var pool string
	poolFlag(fs, &pool, "the pool whose events to print")
	typesFlag := fs.String("types", "", "only events of these types, comma-separated ("+typeNames()+"); all when empty")
	afterFlag := fs.Int64("after", 0, "first replay the retained events with a larger seq, then follow (default: live events only)")
	streamFlag := fs.String("stream", "", "the stream -after counts in (an event's \"stream\"): if the server's events have started again since, print the new stream from its first event")
	args, code, ok := parseInterspersed(e, fs, args)
	if !ok {
		return code
	}
	if len(args) != 0 {
		return usageError(e, fs, "want no arguments, got %d", len(args))
	}
	opts := client.SubscribeOptions{
		OnReconnect: func(err error, after *int64, delay time.Duration) {
			from := "live (no event seen yet)"
			if after != nil {
				from = fmt.Sprintf("after seq %d", *after)
			}
			fmt.Fprintf(e.stderr, "keypoolctl: events: connection lost (%v); resuming %s in %s\n", err, from, delay)
		},
		OnRestart: func(stream string) {
			fmt.Fprintf(e.stderr, "keypoolctl: events: the server's events started again (stream %s, seq from 1); printing them from its first retained event\n", stream)
		},
		Stream: *streamFlag,
		Pool:   pool,
	}
	if *typesFlag != "" {
		for _, name := range strings.Split(*typesFlag, ",") {
			t := client.EventType(strings.ToUpper(strings.TrimSpace(name)))
			if !slices.Contains(client.EventTypes, t) {
				return usageError(e, fs, "-types: unknown event type %q (want %s)", name, typeNames())
			}
			opts.Types = append(opts.Types, t)
		}
	}
	if given(fs, "after") {
		opts.After = afterFlag
	}
	c, code, ok := connect(e, g)
	if !ok {
		return code
	}
	defer c.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The first connection's handshake is bounded by the client itself.
	sub, err := c.Subscribe(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return fail(e, g, err)
	}
	defer sub.Close()

	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	for ev := range sub.Events() {
		if err := enc.Encode(ev); err != nil {
			fmt.Fprintf(e.stderr, "keypoolctl: events: writing: %v\n", err)
			return exitError
		}
	}
	err = sub.Err()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return exitOK // interrupted
	}
	return fail(e, g, err)
}

func typeNames() string {
	names := make([]string, len(client.EventTypes))
	for i, t := range client.EventTypes {
		names[i] = string(t)
	}
	return strings.Join(names, ",")
}
