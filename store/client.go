package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Mode is the kind of Redis deployment a store talks to.
type Mode int

const (
	// Single is one Redis server (redis://, rediss://, unix://).
	Single Mode = iota
	// Sentinel is a master and its replicas, watched by Redis Sentinel,
	// which promotes a replica when the master fails (redis+sentinel://).
	Sentinel
	// Cluster is a Redis Cluster (redis+cluster://).
	Cluster
)

func (m Mode) String() string {
	switch m {
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	}
	return "single"
}

// Default ports of the addresses of a Sentinel or Cluster URL that give none.
const (
	sentinelPort = "26379"
	clusterPort  = "6379"
)

// target is a parsed Redis URL: the options of a single-node client, or
// those of go-redis's universal client for Sentinel and Cluster.
type target struct {
	mode   Mode
	single *redis.Options
	multi  *redis.UniversalOptions
}

// addr describes where Redis is, without credentials, for messages.
func (t target) addr() string {
	switch t.mode {
	case Sentinel:
		return fmt.Sprintf("master %s of sentinels %s", t.multi.MasterName, strings.Join(t.multi.Addrs, ","))
	case Cluster:
		return "cluster " + strings.Join(t.multi.Addrs, ",")
	}
	return t.single.Addr
}

// urlForms lists the URL forms the store accepts, for error messages.
const urlForms = "redis://, rediss://, unix://, redis+sentinel://host:26379,host:26379/master[/db] or redis+cluster://host:6379,host:6379"

// parseURL parses a Redis URL (see Config.URL). Its errors never contain the
// URL, which may hold a password.
func parseURL(raw string) (target, error) {
	scheme, _, _ := strings.Cut(raw, "://")
	var t target
	var err error
	switch scheme {
	case "redis+sentinel", "rediss+sentinel":
		t, err = parseMulti(raw, Sentinel)
	case "redis+cluster", "rediss+cluster":
		t, err = parseMulti(raw, Cluster)
	default:
		t.single, err = redis.ParseURL(raw)
	}
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return target{}, fmt.Errorf("store: invalid Redis URL (want %s): %v", urlForms, err)
	}
	return t, nil
}

// parseMulti parses a Sentinel or Cluster URL:
//
//	redis[s]+sentinel://[user:password@]host[:port],host[:port]/master[/db][?sentinel_username=...&sentinel_password=...]
//	redis[s]+cluster://[user:password@]host[:port],host[:port]
//
// The user and password are those of the Redis servers; Sentinel's own are
// query parameters.
func parseMulti(raw string, mode Mode) (target, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	// The addresses are split here: net/url accepts one host. The rest is
	// parsed with a stand-in host, for its unescaping of user, path and
	// query.
	u, err := url.Parse("redis://" + userinfo + "h" + tail)
	if err != nil {
		return target{}, err
	}
	defPort := clusterPort
	if mode == Sentinel {
		defPort = sentinelPort
	}
	o := &redis.UniversalOptions{}
	for _, h := range strings.Split(hosts, ",") {
		addr, err := hostPort(h, defPort)
		if err != nil {
			return target{}, err
		}
		o.Addrs = append(o.Addrs, addr)
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	if strings.HasPrefix(scheme, "rediss") {
		// No ServerName: each server is verified under its own host name.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	q := u.Query()
	path := strings.Trim(u.Path, "/")
	if mode == Cluster {
		if path != "" {
			return target{}, errors.New("a Redis Cluster has only database 0: drop the path")
		}
		if len(q) > 0 {
			return target{}, errors.New("a cluster URL takes no query parameters")
		}
		// Two addresses make go-redis's universal client a cluster
		// client; one seed address needs the flag.
		o.IsClusterMode = true
		return target{mode: Cluster, multi: o}, nil
	}
	master, db, _ := strings.Cut(path, "/")
	if master == "" {
		return target{}, errors.New("a sentinel URL names the master after the addresses: redis+sentinel://host:26379/mymaster")
	}
	o.MasterName = master
	if db != "" {
		if o.DB, err = strconv.Atoi(db); err != nil || o.DB < 0 {
			return target{}, fmt.Errorf("invalid database number %q", db)
		}
	}
	for k := range q {
		switch k {
		case "sentinel_username":
			o.SentinelUsername = q.Get(k)
		case "sentinel_password":
			o.SentinelPassword = q.Get(k)
		default:
			return target{}, fmt.Errorf("unknown query parameter %q (a sentinel URL takes sentinel_username and sentinel_password)", k)
		}
	}
	return target{mode: Sentinel, multi: o}, nil
}

// hostPort returns h as host:port, with defPort when h has no port.
func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", errors.New("an address is empty")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = strings.Trim(h, "[]"), defPort
	}
	if host == "" {
		return "", fmt.Errorf("address %q has no host", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q has an invalid port", h)
	}
	return net.JoinHostPort(host, port), nil
}

// newClient returns the client of t with the timeouts of cfg, tuned so
// that an operation fails fast while Redis is down or fails over (see New).
// resp2 is the protocol the store speaks unless the URL asks for another:
// it uses no RESP3 feature, and on RESP3 go-redis looks for push
// notifications around every command, about 6 % of the worker's CPU under
// a load of cached status commands (bench P7).
const resp2 = 2

func newClient(t target, cfg Config) redis.UniversalClient {
	if t.mode == Single {
		o := t.single
		if cfg.DialTimeout > 0 {
			o.DialTimeout = cfg.DialTimeout
		}
		if cfg.ReadTimeout > 0 {
			o.ReadTimeout = cfg.ReadTimeout
		}
		if o.DialerRetries == 0 {
			o.DialerRetries = 1
		}
		if o.Protocol == 0 {
			o.Protocol = resp2
		}
		return redis.NewClient(o)
	}
	o := *t.multi
	o.DialTimeout, o.ReadTimeout = cfg.DialTimeout, cfg.ReadTimeout
	// One dial per attempt, as for a single server (see New).
	o.DialerRetries = 1
	// Commands go to the master: a replica may lag, and a config read
	// right after its write must see it.
	o.ReadOnly, o.RouteByLatency, o.RouteRandomly = false, false, false
	if o.Protocol == 0 {
		o.Protocol = resp2
	}
	return redis.NewUniversalClient(&o)
}
