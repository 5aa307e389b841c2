package cutproxy

import (
	"net"
	"testing"
	"time"
)

// TestCloseDropsAConnectionBeingDialled: a connection accepted just before Close, whose
// dial to the target ends after Close has cut the others, is dropped, not piped:
// piped, it would keep Close waiting for as long as its client keeps it open.
func TestCloseDropsAConnectionBeingDialled(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, as a server holds a websocket
		}
	}()
	dialling, release := make(chan struct{}), make(chan struct{})
	p, err := newDialling(target.Addr().String(), func(network, address string) (net.Conn, error) {
		close(dialling)
		<-release
		return net.Dial(network, address)
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // held open, as a client holds a websocket
	<-dialling

	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	for { // Close has begun once the proxy accepts no more
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(time.Millisecond)
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for a connection accepted as it began")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection was piped, not dropped")
	}
}
