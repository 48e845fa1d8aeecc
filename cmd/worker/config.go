package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/natsbus"
	"github.com/berth-ops/berth/store"
)

// Config is the worker's configuration, from flags and BERTH_* variables
// (a flag wins over its variable).
type Config struct {
	Dev       bool
	DevNATS   string // listen address of the embedded nats-server
	NATSURL   string
	NATSCreds string
	NATSNKey  string
	NATSUser  string
	NATSPass  string
	TLSCA     string
	TLSCert   string
	TLSKey    string
	RedisURL  string
	// Host names the Docker host this worker runs on, in a fleet of
	// workers sharing one NATS system (default: the machine's host name,
	// made a subject token).
	Host string
	// Heartbeat is how often the worker refreshes its fleet entry; a
	// worker silent for three counts as down.
	Heartbeat time.Duration
	// RedisWaitReplicas and RedisWaitTimeout: how many Redis replicas
	// must acknowledge a write of configuration, and how long it waits
	// for them (store.Config's WaitReplicas and WaitTimeout).
	RedisWaitReplicas int
	RedisWaitTimeout  time.Duration
	Prefix            string
	StateDir          string
	Roots             []string
	Admins            []string
	StatusTTL         time.Duration
	FastSlots         int
	SlowSlots         int
	Grace             time.Duration
	AckWait           time.Duration
	// Replicas is how many NATS servers keep each stream and consumer.
	Replicas  int
	LogLevel  string
	LogFormat string
	// HTTPAddr is where /metrics, /healthz and /readyz are served; empty
	// (or "off") disables the HTTP server.
	HTTPAddr string

	RedactPatterns  []string
	NoDefaultRedact bool

	// SignSecrets (shared) and SignKeys (per client, from the
	// --sign-keys file), when set, make the worker accept only commands
	// signed with one of them (HMAC-SHA256, docs/security.md) within
	// SignWindow; a client key speaks only for its users and projects.
	SignSecrets [][]byte
	SignKeys    []auth.Key
	SignWindow  time.Duration
	// InsecureUnsigned lets a worker on real NATS and Redis accept
	// unsigned commands (it refuses to start without signing otherwise).
	InsecureUnsigned bool
	// EventSecret signs every event the worker publishes.
	EventSecret []byte

	ConfirmTTL    time.Duration
	VerifyTimeout time.Duration
	UndoWait      time.Duration
	Stabilize     time.Duration
	KeepReleases  int
	// TestPauseAt and TestPauseFor pause mutations at a step: a hook for
	// the crash tests, hidden from the usage text.
	TestPauseAt  string
	TestPauseFor time.Duration
}

// ParseConfig reads args and the environment.
func ParseConfig(args []string, getenv func(string) string) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var roots, admins, secrets, keysFile, eventSecret string
	fs.BoolVar(&c.Dev, "dev", env("BERTH_DEV", "") == "1" || env("BERTH_DEV", "") == "true", "embedded development mode: in-process NATS and Redis-compatible store (also the default when no --nats-url and --redis-url are given)")
	fs.StringVar(&c.DevNATS, "dev-nats-listen", env("BERTH_DEV_NATS_LISTEN", "127.0.0.1:4222"), "listen address of the embedded nats-server in dev mode")
	fs.StringVar(&c.NATSURL, "nats-url", env("BERTH_NATS_URL", ""), "NATS server URL(s), comma-separated")
	fs.StringVar(&c.NATSCreds, "nats-creds", env("BERTH_NATS_CREDS", ""), "NATS credentials file")
	fs.StringVar(&c.NATSNKey, "nats-nkey", env("BERTH_NATS_NKEY", ""), "NATS nkey seed file")
	fs.StringVar(&c.NATSUser, "nats-user", env("BERTH_NATS_USER", ""), "NATS user name")
	fs.StringVar(&c.NATSPass, "nats-password", env("BERTH_NATS_PASSWORD", ""), "NATS password")
	fs.StringVar(&c.TLSCA, "nats-tls-ca", env("BERTH_NATS_TLS_CA", ""), "CA certificate for the NATS TLS connection")
	fs.StringVar(&c.TLSCert, "nats-tls-cert", env("BERTH_NATS_TLS_CERT", ""), "client certificate for NATS TLS")
	fs.StringVar(&c.TLSKey, "nats-tls-key", env("BERTH_NATS_TLS_KEY", ""), "client key for NATS TLS")
	fs.StringVar(&c.Host, "host", env("BERTH_HOST", ""), "the name of this worker's Docker host in the fleet: projects with this host run here (default: the machine's host name; letters, digits, '-' and '_')")
	fs.DurationVar(&c.Heartbeat, "heartbeat", envDuration(getenv, "BERTH_HEARTBEAT", 5*time.Second), "how often the worker tells the fleet it is alive (silent for three: down)")
	fs.StringVar(&c.RedisURL, "redis-url", env("BERTH_REDIS_URL", ""), "Redis URL: redis://, rediss:// or unix:// for one server; redis+sentinel://host:26379,host:26379/master[/db] for Sentinel; redis+cluster://host:6379,host:6379 for a Cluster (docs/running.md)")
	fs.IntVar(&c.RedisWaitReplicas, "redis-wait-replicas", envInt(getenv, "BERTH_REDIS_WAIT_REPLICAS", 0), "Redis replicas that must acknowledge a write of configuration before it succeeds; 0: 1 with Sentinel and Cluster, none with one server; -1: none")
	fs.DurationVar(&c.RedisWaitTimeout, "redis-wait-timeout", envDuration(getenv, "BERTH_REDIS_WAIT_TIMEOUT", store.DefaultWaitTimeout), "how long a write of configuration waits for its Redis replicas before it fails with store_unavailable")
	fs.StringVar(&c.Prefix, "prefix", env("BERTH_PREFIX", events.DefaultPrefix), "subject prefix and Redis key prefix")
	fs.StringVar(&c.StateDir, "state-dir", env("BERTH_STATE_DIR", ""), "directory for Berth's state (embedded NATS data in dev mode; releases and journals)")
	fs.StringVar(&roots, "roots", env("BERTH_ROOTS", ""), "comma-separated directories that workspace and production paths must lie in")
	fs.StringVar(&admins, "admins", env("BERTH_ADMINS", ""), `comma-separated global admins (users who may do anything); "*" makes everyone an admin (the dev-mode default)`)
	fs.DurationVar(&c.StatusTTL, "status-ttl", envDuration(getenv, "BERTH_STATUS_TTL", 10*time.Second), "how long a status is served from the cache")
	fs.IntVar(&c.FastSlots, "fast-slots", envInt(getenv, "BERTH_FAST_SLOTS", 32), "read-only commands worked on at once")
	fs.IntVar(&c.SlowSlots, "slow-slots", envInt(getenv, "BERTH_SLOW_SLOTS", 4), "mutations worked on at once")
	fs.DurationVar(&c.Grace, "grace", envDuration(getenv, "BERTH_GRACE", 30*time.Second), "how long in-flight work may finish on shutdown")
	fs.DurationVar(&c.AckWait, "ack-wait", envDuration(getenv, "BERTH_ACK_WAIT", 30*time.Second), "JetStream AckWait of the command consumers")
	fs.IntVar(&c.Replicas, "replicas", envInt(getenv, "BERTH_REPLICAS", 1), "how many NATS servers keep each stream and consumer: 1 on a single server, 3 (or 5) on a JetStream cluster of at least that many servers")
	fs.StringVar(&c.LogLevel, "log-level", env("BERTH_LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", env("BERTH_LOG_FORMAT", "json"), "json, or console for people")
	fs.StringVar(&c.HTTPAddr, "http-addr", env("BERTH_HTTP_ADDR", "127.0.0.1:9090"), `host:port of the HTTP server for /metrics, /healthz and /readyz; "" or "off" disables it`)
	fs.DurationVar(&c.ConfirmTTL, "confirm-ttl", envDuration(getenv, "BERTH_CONFIRM_TTL", 5*time.Minute), "how long a confirmation token is valid")
	fs.DurationVar(&c.VerifyTimeout, "verify-timeout", envDuration(getenv, "BERTH_VERIFY_TIMEOUT", 90*time.Second), "how long services may take to become healthy after a mutation")
	fs.DurationVar(&c.UndoWait, "undo-wait", envDuration(getenv, "BERTH_UNDO_WAIT", 60*time.Second), "how long a failed deploy retries its rollback while Docker or Redis does not answer, before it answers and leaves the rollback to the worker's recovery loop")
	fs.DurationVar(&c.Stabilize, "stabilize", envDuration(getenv, "BERTH_STABILIZE", 3*time.Second), "how long a service without healthcheck must run unchanged to count as up")
	fs.IntVar(&c.KeepReleases, "keep-releases", envInt(getenv, "BERTH_KEEP_RELEASES", 5), "releases (file backups and image tags) kept per project")
	fs.StringVar(&c.TestPauseAt, "test-pause-at", getenv("BERTH_TEST_PAUSE_AT"), "")
	fs.DurationVar(&c.TestPauseFor, "test-pause-for", envDuration(getenv, "BERTH_TEST_PAUSE_FOR", 0), "")
	fs.Func("redact", "a regular expression whose matches are masked in log lines and command output (repeatable; BERTH_REDACT holds several, one per line)", func(v string) error {
		c.RedactPatterns = append(c.RedactPatterns, v)
		return nil
	})
	for _, p := range strings.Split(getenv("BERTH_REDACT"), "\n") {
		if p = strings.TrimSpace(p); p != "" {
			c.RedactPatterns = append(c.RedactPatterns, p)
		}
	}
	fs.StringVar(&secrets, "sign-secrets", env("BERTH_SIGN_SECRETS", getenv("BERTH_SIGN_SECRET")), "comma-separated HMAC secrets (plain, hex:…, base64:…; at least 16 bytes each); when set, unsigned, stale or forged commands get unauthorized")
	fs.StringVar(&keysFile, "sign-keys", env("BERTH_SIGN_KEYS", ""), "a JSON file of client keys: each has an id (sent in the Berth-Key header), a secret, and the users and projects it may sign for (docs/security.md)")
	fs.BoolVar(&c.InsecureUnsigned, "insecure-unsigned", env("BERTH_INSECURE_UNSIGNED", "") == "1", "accept unsigned commands on real NATS and Redis: anyone who may publish a command may claim to be any user (the worker refuses to start without signing otherwise)")
	fs.StringVar(&eventSecret, "event-secret", env("BERTH_EVENT_SECRET", ""), "sign every event with this secret (plain, hex:…, base64:…), so clients holding it can tell the worker's events from forged ones")
	fs.DurationVar(&c.SignWindow, "sign-window", envDuration(getenv, "BERTH_SIGN_WINDOW", 5*time.Minute), "how far a signed command's timestamp may be from now")
	fs.BoolVar(&c.NoDefaultRedact, "no-default-redaction", env("BERTH_NO_DEFAULT_REDACTION", "") == "1", "do not mask common token shapes (passwords, API keys, bearer tokens)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, r := range strings.Split(roots, ",") {
		if r = strings.TrimSpace(r); r != "" {
			c.Roots = append(c.Roots, r)
		}
	}
	if secrets != "" {
		var err error
		if c.SignSecrets, err = auth.ParseSecrets(secrets); err != nil {
			return nil, fmt.Errorf("--sign-secrets: %w", err)
		}
	}
	if keysFile != "" {
		var err error
		if c.SignKeys, err = auth.LoadKeys(keysFile); err != nil {
			return nil, fmt.Errorf("--sign-keys: %w", err)
		}
	}
	if eventSecret != "" {
		s, err := auth.ParseSecrets(eventSecret)
		if err != nil || len(s) != 1 {
			return nil, fmt.Errorf("--event-secret: give one secret of at least %d bytes: %v", auth.MinSecretLen, err)
		}
		c.EventSecret = s[0]
	}
	for _, a := range strings.Split(admins, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.Admins = append(c.Admins, a)
		}
	}
	if c.NATSURL == "" && c.RedisURL == "" {
		c.Dev = true
	}
	if strings.EqualFold(c.HTTPAddr, "off") {
		c.HTTPAddr = ""
	}
	c.setDefaults(getenv)
	return c, c.Validate()
}

func (c *Config) setDefaults(getenv func(string) string) {
	if c.Host == "" {
		c.Host = DefaultHost()
	}
	if c.StateDir == "" {
		if c.Dev {
			c.StateDir = ".berth"
		} else {
			c.StateDir = "/var/lib/berth"
		}
	}
	if abs, err := filepath.Abs(c.StateDir); err == nil {
		c.StateDir = abs
	}
	if c.Dev && len(c.Admins) == 0 {
		c.Admins = []string{"*"}
	}
	if c.Dev && len(c.Roots) == 0 {
		// Development default: projects under the home directory or the
		// temporary directory.
		if home := getenv("HOME"); home != "" {
			c.Roots = append(c.Roots, filepath.Clean(home))
		}
		c.Roots = append(c.Roots, filepath.Clean(os.TempDir()))
	}
}

// DefaultHost is the machine's host name as a fleet host: its first label,
// with characters a subject token cannot hold replaced by '-'.
func DefaultHost() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	h, _, _ = strings.Cut(h, ".")
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

// Validate reports settings that cannot work, saying which to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.Host != "" && !events.ValidHost(c.Host) {
		errs = append(errs, fmt.Errorf("--host %q: a host name holds letters, digits, '-' and '_', at most 63 (it is a NATS subject token)", c.Host))
	}
	if !c.Dev && c.NATSURL == "" {
		errs = append(errs, errors.New("--nats-url (BERTH_NATS_URL) is required outside dev mode"))
	}
	if !c.Dev && c.RedisURL == "" {
		errs = append(errs, errors.New("--redis-url (BERTH_REDIS_URL) is required outside dev mode"))
	}
	if !c.Dev && len(c.SignSecrets) == 0 && len(c.SignKeys) == 0 && !c.InsecureUnsigned {
		errs = append(errs, errors.New("signing is off: without --sign-keys or --sign-secrets anyone who may publish a command may claim to be any user; "+
			"give client keys (docs/security.md), or start with --insecure-unsigned (BERTH_INSECURE_UNSIGNED=1) to accept that"))
	}
	if c.Dev && (c.NATSURL != "" || c.RedisURL != "") {
		errs = append(errs, errors.New("--dev runs its own NATS and Redis: drop --nats-url and --redis-url, or drop --dev"))
	}
	if c.RedisWaitTimeout < 0 {
		errs = append(errs, errors.New("--redis-wait-timeout must not be negative"))
	}
	if c.RedisURL != "" {
		if err := (store.Config{URL: c.RedisURL}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--redis-url: %w", err))
		}
	}
	if !validPrefix(c.Prefix) {
		errs = append(errs, fmt.Errorf("--prefix %q must be one subject token of letters, digits, '_' or '-'", c.Prefix))
	}
	for _, r := range c.Roots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r {
			errs = append(errs, fmt.Errorf("root %q must be an absolute, clean path", r))
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		errs = append(errs, errors.New("use --nats-creds or --nats-nkey, not both"))
	}
	if c.FastSlots < 1 || c.SlowSlots < 1 {
		errs = append(errs, errors.New("--fast-slots and --slow-slots must be at least 1"))
	}
	if c.KeepReleases < 1 {
		errs = append(errs, errors.New("--keep-releases must be at least 1"))
	}
	if c.ConfirmTTL < time.Second || c.VerifyTimeout < time.Second {
		errs = append(errs, errors.New("--confirm-ttl and --verify-timeout must be at least 1s"))
	}
	if c.UndoWait < 0 {
		errs = append(errs, errors.New("--undo-wait must not be negative"))
	}
	if !natsbus.ValidReplicas(c.Replicas) {
		errs = append(errs, fmt.Errorf("--replicas %d must be 1 (a single NATS server), 3 or 5 (a JetStream cluster of at least that many servers)", c.Replicas))
	}
	if c.Dev && c.Replicas != 1 {
		errs = append(errs, errors.New("--dev runs one embedded NATS server, which keeps one copy: drop --replicas"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("--ack-wait must be at least 1s"))
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("--http-addr %q must be host:port (127.0.0.1:9090, :9090), or empty to disable the HTTP server", c.HTTPAddr))
		}
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q must be json or console", c.LogFormat))
	}
	return errors.Join(errs...)
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 32 {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func envDuration(getenv func(string) string, name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}

// Version is the worker's version: the module version it was built as,
// else its VCS revision, else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
