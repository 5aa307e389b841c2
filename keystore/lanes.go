package keystore

import (
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Lane is what this process keeps of one pool beside its keys, whatever the backend:
// the pool's stream of events and its line of waiting Acquires.
type Lane struct {
	Name    string
	Events  *Hub
	Waiters *WaitQueue
}

// Lanes holds the lane of every pool this process has met, each made on first use
// and kept for the life of the process (a pool's stream outlives its keys).
//
// A backend asks for the lane of a pool it has made with Made, which always gives
// one: it bounds the pools it makes by Options.MaxPools. The front asks with Get for
// the pools that requests name (a subscription or a waiting Acquire may come before
// the pool is made), and Get refuses a new lane once the lanes number twice
// Options.MaxPools, so that requests naming pools at random cannot make this
// process's memory grow without bound.
type Lanes struct {
	retention int
	limit     int
	obs       Observer
	// OnNew, if set (by a backend, as it opens), prepares each new lane before anyone
	// sees it: a backend whose events outlive the process names the lane's stream.
	OnNew func(*Lane)

	mu    sync.Mutex
	lanes map[string]*Lane
}

func newLanes(opts Options) *Lanes {
	return &Lanes{retention: opts.EventRetention, limit: 2 * opts.MaxPools, obs: opts.Observer, lanes: map[string]*Lane{}}
}

// Get returns the lane of the pool named name, a valid pool name, making it if need
// be; EINVALID if that would make more lanes than the bound.
func (l *Lanes) Get(name string) (*Lane, error) {
	return l.get(name, false)
}

// Made returns the lane of a pool the backend has made, making it if need be.
func (l *Lanes) Made(name string) *Lane {
	lane, _ := l.get(name, true)
	return lane
}

// Peek returns the lane of the pool named name, or nil if there is none yet.
func (l *Lanes) Peek(name string) *Lane {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lanes[name]
}

func (l *Lanes) get(name string, made bool) (*Lane, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lane := l.lanes[name]; lane != nil {
		return lane, nil
	}
	if !made && len(l.lanes) >= l.limit {
		return nil, Errorf(EINVALID, "this server follows %d pools already, the most it allows: pool %s cannot be added", len(l.lanes), quoteName(name))
	}
	lane := &Lane{Name: name, Events: NewHub(l.retention, l.obs), Waiters: newWaitQueue(l.obs)}
	lane.Events.pool = name
	if l.OnNew != nil {
		l.OnNew(lane)
	}
	l.lanes[name] = lane
	return lane, nil
}

// each calls f with every lane.
func (l *Lanes) each(f func(*Lane)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lane := range l.lanes {
		f(lane)
	}
}

// PoolName checks a pool name as a request gives it and returns the pool it names:
// "" is DefaultPool; any other name must be 1..MaxPoolName characters of
// [A-Za-z0-9._-], starting with a letter or a digit (EINVALID otherwise).
func PoolName(name string) (string, error) {
	if name == "" {
		return DefaultPool, nil
	}
	if !validPoolName(name) {
		return "", Errorf(EINVALID, "a pool name is 1 to %d characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or a digit; got %s", MaxPoolName, quoteName(name))
	}
	return name, nil
}

func validPoolName(name string) bool {
	if len(name) < 1 || len(name) > MaxPoolName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// checkHolder checks a lease's holder: at most MaxHolder bytes of UTF-8 text without
// control characters.
func checkHolder(holder string) error {
	switch {
	case len(holder) > MaxHolder:
		return Errorf(EINVALID, "holder must be at most %d bytes, got %d", MaxHolder, len(holder))
	case !utf8.ValidString(holder) || strings.ContainsFunc(holder, unicode.IsControl):
		return Errorf(EINVALID, "holder must be text without control characters")
	}
	return nil
}

// quoteName quotes a name a request gave, cut to a length fit for a message.
func quoteName(name string) string {
	const most = MaxPoolName + 8
	if len(name) > most {
		name = strings.ToValidUTF8(name[:most], "") + "…"
	}
	return strconv.Quote(name)
}

// A listing's cursor names the last key of a page: its pool and its position there
// (Record.Pos), in base64url, so that clients take it whole.
func encodeCursor(pool string, pos uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pool + "/" + strconv.FormatUint(pos, 10)))
}

func decodeCursor(cursor string) (pool string, pos uint64, ok bool) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(cursor)
	if err != nil {
		return "", 0, false
	}
	pool, num, ok := strings.Cut(string(raw), "/")
	pos, err = strconv.ParseUint(num, 10, 64)
	return pool, pos, ok && err == nil && validPoolName(pool)
}
