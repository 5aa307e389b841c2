package graph

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// tcpPair is a loopback connection with small buffers (64 KiB: with a few KiB, Linux
// takes minutes to resume a stalled transfer), so that a peer that does not read backs
// up into the writer at once.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s := (<-accepted).(*net.TCPConn)
	require.NoError(t, s.SetWriteBuffer(64<<10))
	require.NoError(t, c.(*net.TCPConn).SetReadBuffer(64<<10))
	t.Cleanup(func() { s.Close(); c.Close() })
	return s, c.(*net.TCPConn)
}

// countingWaiter counts what an outbox tells it.
type countingWaiter struct {
	drains, stalls atomic.Int64
	drainedCh      chan struct{}
}

func newCountingWaiter() *countingWaiter { return &countingWaiter{drainedCh: make(chan struct{}, 16)} }
func (w *countingWaiter) drained() {
	w.drains.Add(1)
	w.drainedCh <- struct{}{}
}
func (w *countingWaiter) stalled() { w.stalls.Add(1) }

// TestOutboxKeepsOrder: sends, posts and kicks from many goroutines reach the peer
// whole and in the order they were queued.
func TestOutboxKeepsOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	server, client := tcpPair(t)
	o := newOutbox(server, 10*time.Second, nil)
	require.NotNil(t, o.raw, "a TCP connection is written without waiting")
	var order sync.Mutex
	var want bytes.Buffer // what was queued, in queue order
	queue := func(msg []byte) int64 {
		order.Lock()
		defer order.Unlock()
		end, err := o.queue(func(b []byte) []byte { return append(b, msg...) })
		require.NoError(t, err)
		want.Write(msg)
		return end
	}
	var got bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(&got, client)
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				msg := bytes.Repeat([]byte{byte('a' + g)}, 1+(i*37)%3000)
				msg = append(msg, fmt.Sprintf("|%d.%d\n", g, i)...)
				end := queue(msg)
				switch i % 3 {
				case 0:
					require.NoError(t, o.wait(end))
				case 1:
					_, err := o.kick(nil)
					require.NoError(t, err)
				case 2:
					w := newCountingWaiter()
					if drained, err := o.kick(w); err == nil && !drained {
						<-w.drainedCh
					}
				}
			}
		})
	}
	wg.Wait()
	o.drain(time.Now().Add(10 * time.Second))
	require.NoError(t, server.CloseWrite())
	<-read
	require.Equal(t, want.Len(), got.Len())
	require.True(t, bytes.Equal(want.Bytes(), got.Bytes()), "the stream is what was queued, in order")
}

// TestOutboxStallsWithoutWaiting: a kick never waits for a peer that does not read;
// a flusher does, telling the waiter every stallCheck, and the waiter is told once
// the peer has read everything.
func TestOutboxStallsWithoutWaiting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	server, client := tcpPair(t)
	o := newOutbox(server, 10*time.Second, nil)
	big := bytes.Repeat([]byte("x"), 8<<20) // far beyond both buffers
	_, err := o.queue(func(b []byte) []byte { return append(b, big...) })
	require.NoError(t, err)
	w := newCountingWaiter()
	start := time.Now()
	drained, err := o.kick(w)
	require.NoError(t, err)
	require.False(t, drained)
	require.Less(t, time.Since(start), time.Second, "kick does not wait for the peer")
	require.Eventually(t, func() bool { return w.stalls.Load() >= 2 }, 10*time.Second, 10*time.Millisecond,
		"the waiter hears of the stall while the peer reads nothing")
	behind := newCountingWaiter()
	require.True(t, o.backedUp(64<<10, behind), "megabytes wait for the peer")
	require.False(t, o.backedUp(len(big), newCountingWaiter()))
	select {
	case <-w.drainedCh:
		t.Fatal("drained while the peer reads nothing")
	default:
	}
	n, err := io.CopyN(io.Discard, client, int64(len(big)))
	require.NoError(t, err)
	require.EqualValues(t, len(big), n)
	select {
	case <-w.drainedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("not told of the drain")
	}
	require.EqualValues(t, 1, w.drains.Load())
	<-behind.drainedCh
	require.False(t, o.backedUp(0, behind), "drained")
}

// TestOutboxGivesUpAStalledPeer: a peer that takes nothing for the stall timeout
// loses its connection: onFail is called, waiters are told, later writes fail.
func TestOutboxGivesUpAStalledPeer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	server, _ := tcpPair(t)
	failed := make(chan error, 1)
	o := newOutbox(server, 300*time.Millisecond, func(err error) { failed <- err })
	_, err := o.queue(func(b []byte) []byte { return append(b, bytes.Repeat([]byte("x"), 8<<20)...) })
	require.NoError(t, err)
	w := newCountingWaiter()
	drained, err := o.kick(w)
	require.NoError(t, err)
	require.False(t, drained)
	select {
	case err := <-failed:
		require.True(t, isTimeout(err), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a peer that reads nothing was never given up")
	}
	<-w.drainedCh
	require.Error(t, o.send([]byte("more")))
	_, err = o.kick(nil)
	require.Error(t, err)
}

// slowConn is a writeConn without a socket: every write may wait.
type slowConn struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *slowConn) Write(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *slowConn) SetWriteDeadline(time.Time) error { return nil }

// TestOutboxWithoutSocket: on a connection it cannot write without waiting (an HTTP
// response), every kick leaves the write to a flusher, and close waits for it.
func TestOutboxWithoutSocket(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	conn := &slowConn{}
	o := newOutbox(conn, time.Second, nil)
	require.Nil(t, o.raw)
	w := newCountingWaiter()
	for i := range 10 {
		_, err := o.queue(func(b []byte) []byte { return fmt.Appendf(b, "%d;", i) })
		require.NoError(t, err)
		drained, err := o.kick(w)
		require.NoError(t, err)
		require.False(t, drained)
	}
	require.NoError(t, o.send([]byte("end")))
	o.close()
	require.Equal(t, "0;1;2;3;4;5;6;7;8;9;end", conn.buf.String())
	select { // told after the writer let go
	case <-w.drainedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was never told of the drain")
	}
	require.ErrorIs(t, o.send([]byte("late")), errOutboxClosed)
}
