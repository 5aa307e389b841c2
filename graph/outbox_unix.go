//go:build unix

package graph

import "syscall"

// canWriteRaw: a socket's descriptor can be written without waiting.
const canWriteRaw = true

// writeNonBlocking writes what the socket takes now: the descriptor is non-blocking
// (Go's poller set it so), and a full send buffer ends the write with what it took.
func writeNonBlocking(fd uintptr, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := syscall.Write(int(fd), buf[n:])
		if m > 0 {
			n += m
		}
		switch err {
		case nil:
			if m <= 0 {
				return n, nil
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}
