package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/keypool/keypool/client"
)

// callAPI stands for the work done with a key.
func callAPI(ctx context.Context, key string, fence int64) error { return nil }

func ExampleClient_Lease() {
	kp, err := client.New("http://localhost:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer kp.Close()

	lease, err := kp.Lease(context.Background(), client.AcquireOptions{TTL: 30 * time.Second, Wait: 5 * time.Second})
	if errors.Is(err, client.ErrNotFound) {
		log.Fatal("no key came free within 5s")
	} else if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(context.Background()) // unblocks the key

	// The lease is renewed in the background for as long as this runs; its context
	// is cancelled the moment the lease is lost, with the reason as its cause.
	if err := callAPI(lease.Context(), lease.KeyID(), lease.Fence()); err != nil {
		log.Print(err, context.Cause(lease.Context()))
	}
}

func ExampleClient_Subscribe() {
	kp, err := client.New("http://localhost:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer kp.Close()

	var after int64 = 41 // the last seq seen before, if any
	sub, err := kp.Subscribe(context.Background(), client.SubscribeOptions{
		Types: []client.EventType{client.Released, client.Expired},
		After: &after,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for ev := range sub.Events() { // reconnects and resumes by itself
		fmt.Println(ev.Seq, ev.Type, ev.KeyID)
	}
	log.Print(sub.Err()) // a coded error that is not about the connection
}
