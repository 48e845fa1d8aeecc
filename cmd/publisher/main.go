// Command publisher sends one command to a Berth worker over NATS JetStream
// and prints the events of the request until its result:
//
//	publisher [flags] <action> <project> [--arg k=v ...]
//	publisher [flags] --follow <request-id>
//	publisher completion bash|zsh|fish
//
// It subscribes to berth.evt.<project>.<user-token>.<id>.> (the events of
// a request are scoped by its user: events.UserToken) before it publishes
// the command on berth.cmd.<project>.<action>, so no event is missed.
// With --follow it replays the events of an existing request of --user
// from the event stream instead. Flags may come before or after the
// positional arguments.
//
// The request id is the body's "id" (random unless --id sets it). The
// command's Nats-Msg-Id, by which JetStream drops a second copy, is not
// the request id, which others may know or guess and could publish under
// first, so that the stream would drop the real command: it is "s-" and
// 32 hex digits of SHA-256 of the Berth-Signature header for a signed
// command, "r-" and 32 random hex digits otherwise (msgID), computed once
// per command, so that a publication repeated for a lost PubAck is kept
// once.
//
// With --sign-secret (or BERTH_SIGN_SECRET) each command carries the
// Berth-Timestamp and Berth-Signature headers of package auth, and with
// --sign-key-id the Berth-Key header naming the client's key. With
// --event-secret it shows and uses only the events the worker signed
// with that secret (auth.VerifyEvent), and warns of any other. Every
// string from the wire is sanitized before it reaches the terminal
// (sanitize.go); --json output stays JSON, with the characters a terminal
// would act on escaped. It connects
// with the worker's NATS options (--nats-creds, --nats-nkey, --nats-user and
// --nats-password, --nats-tls-ca, --nats-tls-cert, --nats-tls-key, and their
// BERTH_NATS_* variables), or with a context of the nats CLI (--context
// NAME); docs/security.md has the permissions a bot needs.
//
// On a terminal it shows progress live (a status line with the step, a
// progress bar and the time taken, build output above it; a step that
// failed is marked ✗, and the rollback that follows it is the
// rollback's) and uses colours; otherwise it prints plain lines. Plans
// and results are printed as text (plans.go, results.go): a deploy plan
// as what widens a service's reach over the host, the compose diff and
// the files; a result as tables and key: value lines; a failure with the
// failing service, its health output and last log lines first. --json
// prints every event as one JSON line, as received. --verbose shows every
// line of Compose's output (log events of stream "compose").
//
// Every command says who asks: --user, BERTH_USER, or "berth_user" in
// the --context file; without one it is refused (confirm.go has the
// confirmation, suggest.go the suggestions for a mistyped action or
// project).
//
// A mutation's plan is confirmed in one step on a terminal (the
// publisher asks, then sends the confirming command with the plan's
// token) or with --yes; otherwise the run ends at the plan, exit 0.
//
// Exit codes: 0 the result is ok, or the run ended at a plan to confirm;
// 1 the result is an error; 2 bad usage; 3 no result within --timeout,
// no worker stream, or a connection error; 10 the run ended at a plan,
// with --strict-exit; 130 interrupted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
)

// Exit codes.
const (
	exitOK          = 0   // the result is ok
	exitFailed      = 1   // the result is an error
	exitUsage       = 2   // bad flags or arguments
	exitUnavailable = 3   // no result in time, no stream, connection error
	exitConfirm     = 10  // with --strict-exit: the command ended at its plan, nothing was done
	exitInterrupted = 130 // interrupted by a signal
)

// progName names the command in messages and suggested command lines.
const progName = "publisher"

// Default timeouts.
const (
	defaultTimeout     = 60 * time.Second
	slowActionTimeout  = 15 * time.Minute
	logsFollowSlack    = 30 * time.Second
	defaultNATSURL     = "nats://127.0.0.1:4222"
	confirmResultGrace = 10 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the parsed command line.
type options struct {
	server       string
	creds        string
	nkey         string
	natsUser     string
	natsPassword string
	tlsCA        string
	tlsCert      string
	tlsKey       string
	inboxPrefix  string
	token        string // from a NATS context
	tlsFirst     bool   // from a NATS context
	contextName  string

	// signSecret is the secret commands are signed with (auth.Sign);
	// nil when they are not signed.
	signSecret []byte
	// signKeyID names the key of signSecret (auth.HeaderKey); "" for a
	// shared secret.
	signKeyID string
	// eventSecrets are the secrets the worker signs its events with
	// (auth.VerifyEvent); nil when events are not checked.
	eventSecrets [][]byte

	prefix     string
	user       string
	args       json.RawMessage
	confirm    string
	id         string
	jsonOut    bool
	quiet      bool
	timeout    time.Duration
	follow     string
	noColor    bool
	yes        bool // confirm the plan with its token without asking
	strictExit bool // exitConfirm for a command that ended at its plan
	verbose    bool // every line of Compose's output

	action  string
	project string

	// warnings are printed on stderr before the command is sent.
	warnings []string
}

// usageError is a command-line mistake: it exits with exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// secretFlags are the flags whose values are secret: their defaults are not
// taken from the environment when the flags are defined (PrintDefaults
// would show them) but after parsing, in parseArgs.
type secretFlags struct {
	natsPassword    string
	signSecret      string
	signSecretFile  string
	eventSecret     string
	eventSecretFile string
}

// newFlagSet defines the flags into o, with defaults from getenv.
func newFlagSet(o *options, sec *secretFlags, pairs *stringList, argsJSON *string, getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)

	server := getenv("BERTH_NATS_URL")
	if server == "" {
		server = defaultNATSURL
	}
	fs.StringVar(&o.server, "server", server, "NATS server URL(s), comma separated (env BERTH_NATS_URL)")
	fs.StringVar(&o.server, "s", server, "shorthand for --server")
	fs.StringVar(&o.server, "nats-url", server, "same as --server (the worker's name for it)")
	fs.StringVar(&o.contextName, "context", getenv("BERTH_NATS_CONTEXT"),
		"connect as the nats CLI's context `NAME` (~/.config/nats/context/NAME.json, or a path to one); flags and BERTH_NATS_* variables override it (env BERTH_NATS_CONTEXT)")

	// NATS authentication and TLS: each under the worker's flag name, with
	// the worker's environment variable, and under a short name.
	strFlag := func(p *string, names []string, env, usage string) {
		def := getenv(env)
		for i, n := range names {
			u := usage + " (env " + env + ")"
			if i > 0 {
				u = "same as --" + names[0]
			}
			fs.StringVar(p, n, def, u)
		}
	}
	strFlag(&o.creds, []string{"nats-creds", "creds"}, "BERTH_NATS_CREDS", "NATS user credentials `file` (JWT and nkey seed)")
	strFlag(&o.nkey, []string{"nats-nkey", "nkey"}, "BERTH_NATS_NKEY", "NATS nkey seed `file`")
	strFlag(&o.natsUser, []string{"nats-user"}, "BERTH_NATS_USER", "NATS user name")
	fs.StringVar(&sec.natsPassword, "nats-password", "", "NATS password (env BERTH_NATS_PASSWORD, which keeps it out of the process list)")
	strFlag(&o.tlsCA, []string{"nats-tls-ca", "tls-ca"}, "BERTH_NATS_TLS_CA", "CA certificate `file` to verify the NATS server (implies TLS)")
	strFlag(&o.tlsCert, []string{"nats-tls-cert", "tls-cert"}, "BERTH_NATS_TLS_CERT", "client certificate `file` for NATS TLS (with --nats-tls-key)")
	strFlag(&o.tlsKey, []string{"nats-tls-key", "tls-key"}, "BERTH_NATS_TLS_KEY", "client key `file` for NATS TLS (with --nats-tls-cert)")
	strFlag(&o.inboxPrefix, []string{"nats-inbox-prefix"}, "BERTH_NATS_INBOX_PREFIX",
		"reply subject `prefix` instead of _INBOX, to match per-user permissions (see docs/security.md)")

	// Command signing.
	fs.StringVar(&sec.signSecret, "sign-secret", "",
		"sign commands with this `secret` (plain, hex:…, or base64:…; the first of a comma-separated list) (env BERTH_SIGN_SECRET, which keeps it out of the process list)")
	fs.StringVar(&sec.signSecretFile, "sign-secret-file", "", "read the signing secret from this `file` (env BERTH_SIGN_SECRET_FILE)")
	fs.StringVar(&o.signKeyID, "sign-key-id", getenv("BERTH_SIGN_KEY_ID"),
		"send the Berth-Key header naming your key `ID` of the worker's --sign-keys file, with the signature; needs a signing secret (env BERTH_SIGN_KEY_ID)")

	// Event signatures.
	fs.StringVar(&sec.eventSecret, "event-secret", "",
		"show only events the worker signed with this `secret` (its event secret; plain, hex:… or base64:…, a comma-separated list during a rotation), and warn of others (env BERTH_EVENT_SECRET)")
	fs.StringVar(&sec.eventSecretFile, "event-secret-file", "", "read the event secret from this `file` (env BERTH_EVENT_SECRET_FILE)")

	prefix := getenv("BERTH_PREFIX")
	if prefix == "" {
		prefix = events.DefaultPrefix
	}
	fs.StringVar(&o.prefix, "prefix", prefix, "subject prefix (env BERTH_PREFIX)")
	fs.StringVar(&o.user, "user", getenv("BERTH_USER"),
		`who asks, as <platform>:<id>, such as cli:alice (env BERTH_USER; else "berth_user" of the --context file); required`)
	fs.Var(pairs, "arg", "an argument `k=v`, repeatable; v is JSON when valid JSON, else a string")
	fs.StringVar(argsJSON, "args", "", "arguments as a JSON object (merged with --arg)")
	fs.StringVar(&o.confirm, "confirm", "", "confirm with `yes|TOKEN`: yes, or the token of a confirm event")
	fs.StringVar(&o.id, "id", "", "request id (default a new random id)")
	fs.BoolVar(&o.jsonOut, "json", false, "print every event as one JSON line, and nothing else")
	fs.BoolVar(&o.quiet, "quiet", false, "print only the result")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout,
		"how long to wait for the result; without it 15m for deploy, restart and rollback, follow_s+30s for logs that follow")
	fs.StringVar(&o.follow, "follow", "", "replay and follow the events of an existing request `ID` of --user")
	fs.BoolVar(&o.noColor, "no-color", false, "never use colours (also env NO_COLOR)")
	fs.BoolVar(&o.yes, "yes", false, "confirm the plan with its token without asking; without it, on a terminal (and not with --json or --quiet) the publisher asks")
	fs.BoolVar(&o.yes, "y", false, "shorthand for --yes")
	fs.BoolVar(&o.strictExit, "strict-exit", false,
		fmt.Sprintf("exit %d (instead of 0) when the command ended at its plan: confirmation required, not confirmed, nothing done", exitConfirm))
	fs.BoolVar(&o.verbose, "verbose", false, "show every line of Compose's output (builds, pulls, up), not only a few a second")
	fs.BoolVar(&o.verbose, "v", false, "shorthand for --verbose")
	return fs
}

// parseArgs parses the command line (without the program name). Flags may
// appear anywhere. Errors are *usageError, or flag.ErrHelp for -h.
func parseArgs(args []string, getenv func(string) string) (*options, error) {
	o := &options{}
	var sec secretFlags
	var pairs stringList
	var argsJSON string
	fs := newFlagSet(o, &sec, &pairs, &argsJSON, getenv)
	if err := fs.Parse(reorderArgs(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	var err error
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })

	pos := fs.Args()
	switch {
	case o.follow != "" && len(pos) == 0:
	case o.follow != "" && len(pos) != 2:
		return nil, usagef("with --follow give no arguments, or <action> <project>")
	case len(pos) == 0:
		return nil, usagef("missing <action> and <project>")
	case len(pos) == 1 && !events.IsKnownAction(pos[0]):
		return nil, unknownAction(pos[0])
	case len(pos) == 1:
		return nil, usagef("missing <project> after %q", pos[0])
	case len(pos) > 2:
		return nil, usagef("too many arguments: %q; pass action arguments with --arg k=v", pos[2:])
	}
	if len(pos) == 2 {
		o.action, o.project = pos[0], pos[1]
		if !events.IsKnownAction(o.action) {
			if events.IsKnownAction(o.project) {
				// publisher demo status: the words are swapped.
				return nil, usagef("%q is not an action, but %q is: the action comes first, then the project: %s %s %s",
					o.action, o.project, progName, o.project, o.action)
			}
			return nil, unknownAction(o.action)
		}
		if !events.ValidProject(o.project) {
			return nil, usagef("invalid project %q: use at most 63 lower-case letters, digits, '_' and '-', starting with a letter or digit", o.project)
		}
	}
	if o.yes && o.confirm != "" {
		return nil, usagef("use --yes or --confirm, not both: --yes confirms the plan it is shown, --confirm one shown before")
	}
	if o.yes && o.follow != "" {
		return nil, usagef("--yes confirms the plan of a command it sends; it does not go with --follow (confirm with --confirm TOKEN)")
	}
	if o.follow != "" && !events.ValidRequestID(o.follow) {
		return nil, usagef("--follow %q is not a request id (1 to 64 of A-Z a-z 0-9 _ -)", o.follow)
	}
	if !validPrefix(o.prefix) {
		return nil, usagef("--prefix %q is not a valid subject prefix", o.prefix)
	}
	o.natsPassword = sec.natsPassword
	if o.natsPassword == "" {
		o.natsPassword = getenv("BERTH_NATS_PASSWORD")
	}
	if o.contextName != "" {
		c, err := loadNATSContext(o.contextName, getenv)
		if err != nil {
			return nil, usagef("%v", err)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if sec.natsPassword != "" {
			set["nats-password"] = true
		}
		applyNATSContext(o, c, set, getenv)
		if o.user == "" && !set["user"] {
			o.user = c.BerthUser
		}
	}
	if err := checkUser(o); err != nil {
		return nil, err
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, usagef("--nats-tls-cert and --nats-tls-key go together")
	}
	if o.creds != "" && o.nkey != "" {
		return nil, usagef("use --nats-creds or --nats-nkey, not both")
	}
	if o.inboxPrefix != "" && !validPrefix(o.inboxPrefix) {
		return nil, usagef("--nats-inbox-prefix %q is not a valid subject prefix", o.inboxPrefix)
	}
	if o.natsPassword != "" && o.natsUser == "" {
		return nil, usagef("--nats-password needs --nats-user")
	}
	signSecrets, err := readSecrets(secretSource{what: "signing secret", flag: "--sign-secret", value: sec.signSecret,
		fileFlag: "--sign-secret-file", file: sec.signSecretFile, env: "BERTH_SIGN_SECRET"}, getenv)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if len(signSecrets) > 0 {
		o.signSecret = signSecrets[0] // a list (as the worker takes for a rotation) signs with its first
	}
	if o.signKeyID != "" && o.signSecret == nil {
		return nil, usagef("--sign-key-id (or BERTH_SIGN_KEY_ID) names the key of a signing secret: give the secret too (--sign-secret, --sign-secret-file, BERTH_SIGN_SECRET or BERTH_SIGN_SECRET_FILE)")
	}
	if o.signKeyID != "" && !keyIDRe.MatchString(o.signKeyID) {
		return nil, usagef("--sign-key-id %q must be 1 to 64 characters from A-Z a-z 0-9 _ . : -", o.signKeyID)
	}
	if o.eventSecrets, err = readSecrets(secretSource{what: "event secret", flag: "--event-secret", value: sec.eventSecret,
		fileFlag: "--event-secret-file", file: sec.eventSecretFile, env: "BERTH_EVENT_SECRET"}, getenv); err != nil {
		return nil, usagef("%v", err)
	}
	if o.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}

	if o.args, err = buildArgs(argsJSON, pairs); err != nil {
		return nil, usagef("%v", err)
	}
	if o.follow != "" {
		o.id = o.follow
		return o, nil
	}
	if o.id == "" {
		o.id = newRequestID()
	}
	cmd := o.command()
	if err := cmd.Validate(); err != nil {
		var e *events.Error
		if errors.As(err, &e) && e.Hint != "" {
			return nil, usagef("%s (%s)", e.Message, e.Hint)
		}
		return nil, usagef("%v", err)
	}
	if !timeoutSet {
		o.timeout = defaultTimeoutFor(o.action, o.args)
	}
	return o, nil
}

// keyIDRe is what a key id may be, as the worker's --sign-keys file
// takes it: it travels in a header.
var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// secretSource names where a secret may come from: a flag, a flag naming
// a file, a variable (env) and a variable naming a file (env + "_FILE").
type secretSource struct {
	what           string // "signing secret"
	flag, value    string
	fileFlag, file string
	env            string
}

// readSecrets returns the secrets from the flag, the file flag, the
// variable or the file variable (in that order), or nil when none is
// given: plain, hex:… or base64:…, comma-separated (auth.ParseSecrets).
func readSecrets(src secretSource, getenv func(string) string) ([][]byte, error) {
	if src.value != "" && src.file != "" {
		return nil, fmt.Errorf("use %s or %s, not both", src.flag, src.fileFlag)
	}
	spec, from := src.value, src.flag
	file := src.file
	if spec == "" && file == "" {
		spec, from = getenv(src.env), src.env
		if spec == "" {
			file = getenv(src.env + "_FILE")
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.what, err)
		}
		spec, from = string(b), file
		if strings.TrimSpace(spec) == "" {
			return nil, fmt.Errorf("%s: %s is empty", src.what, file)
		}
	}
	secrets, err := auth.ParseSecrets(spec)
	if err != nil {
		return nil, fmt.Errorf("%s from %s: %v", src.what, from, err)
	}
	return secrets, nil
}

// defaultTimeoutFor is the result timeout of action when --timeout is not
// given: 15m for deploy, restart, rollback, start and stop; follow_s + 30s for logs that
// follow; 60s otherwise.
func defaultTimeoutFor(action string, args json.RawMessage) time.Duration {
	switch action {
	case events.ActionDeploy, events.ActionRestart, events.ActionRollback, events.ActionStart, events.ActionStop:
		return slowActionTimeout
	case events.ActionLogs:
		var a struct {
			FollowS float64 `json:"follow_s"`
		}
		if json.Unmarshal(args, &a) == nil && a.FollowS > 0 {
			return time.Duration(a.FollowS*float64(time.Second)) + logsFollowSlack
		}
	}
	return defaultTimeout
}

// command is the body this invocation publishes.
func (o *options) command() *events.Command {
	return &events.Command{ID: o.id, User: o.user, Args: o.args, Confirm: o.confirm}
}

func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// unknownAction is the usage error of an action that is not one, with
// the closest known action when one is close (did you mean status?).
func unknownAction(a string) error {
	msg := fmt.Sprintf("unknown action %q", a)
	if s := closest(a, events.Actions(), 2); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return usagef("%s; the actions are: %s", msg, strings.Join(events.Actions(), ", "))
}

// checkUser refuses a command without a user, which the worker would
// know as nobody in particular, and warns of a user without a platform.
func checkUser(o *options) error {
	if strings.TrimSpace(o.user) == "" {
		return usagef("who is asking? give your user as <platform>:<id>: --user cli:alice, or BERTH_USER=cli:alice in the environment, " +
			`or "berth_user": "cli:alice" in the NATS context file of --context; the worker checks its roles against it`)
	}
	if !strings.Contains(o.user, ":") {
		o.warnings = append(o.warnings, fmt.Sprintf("warning: user %q has no platform: users are <platform>:<id>, e.g. cli:%s; the worker's roles name them so",
			o.user, o.user))
	}
	return nil
}

// printUsage writes the usage text, with the actions and flags.
func printUsage(w io.Writer, getenv func(string) string) {
	o := &options{}
	var sec secretFlags
	var pairs stringList
	var argsJSON string
	fs := newFlagSet(o, &sec, &pairs, &argsJSON, getenv)
	fmt.Fprintf(w, `usage: %[1]s [flags] <action> <project> [--arg k=v ...]
       %[1]s [flags] --follow <request-id>
       %[1]s completion bash|zsh|fish

actions: %[2]s

examples:
  export BERTH_USER=cli:alice                   (who asks: required, <platform>:<id>)
  %[1]s status myproj
  %[1]s logs myproj --arg service=web --arg tail=100 --arg grep=error
  %[1]s deploy myproj                       (on a terminal: shows the plan, asks, confirms)
  %[1]s deploy myproj --yes                 (confirms without asking, also in scripts)
  %[1]s deploy myproj --confirm <token>     (confirm a plan shown before)
  %[1]s status myproj --json
  %[1]s status myproj --context prod        (a context of the nats CLI)
  source <(%[1]s completion bash)           (shell completion; also zsh, fish)

confirming:
  deploy, restart, rollback, stop and config.delete show their plan first
  (as text: files, compose changes, what widens a service's reach over the
  host, steps; --json prints the events as they are). On a terminal (stdin
  and stdout), the publisher then asks "Deploy to myproj? [y/N]" and, on y,
  confirms with the plan's token as a new command and shows its progress.
  --yes confirms without asking, anywhere. Otherwise the plan ends the run:
  it prints the command that confirms it and "confirmation required", and
  exits 0, or %[3]d with --strict-exit. A plan only another user may
  confirm (require_second_approver) is never confirmed by the publisher.

user:
  --user, else BERTH_USER, else "berth_user" in the file of --context (the
  context's own "user" is the NATS login): the worker checks the roles of
  this user. Without one the publisher refuses to run; a user without a
  platform ("bob", not "cli:bob") gets a warning.

exit codes:
  0    the result is ok (or the run ended at a plan to confirm)
  1    the result is an error (a failed deploy, forbidden, not_found, …)
  2    bad usage (unknown action, missing user, …)
  3    no result within --timeout, no worker stream, a connection error
  %[3]d   with --strict-exit: the run ended at a plan, nothing was done
  130  interrupted (the request goes on in the worker; --follow it)

protocol:
  The command is published with JetStream on <prefix>.cmd.<project>.<action>,
  its body {"id", "user", "args", "confirm"}. Its events come on
  <prefix>.evt.<project>.<user-token>.<id>.<kind>: a request is its user's,
  and <user-token> is the user itself when it is 1 to 64 of A-Z a-z 0-9
  _ @ : + = -, else "~" and a hash of it. --follow ID looks for the request
  ID of --user.

  The request id is the body's id (random unless --id sets it). The
  Nats-Msg-Id, by which the command stream drops a second copy of a
  message, is not the request id: others may know or guess an id, publish
  first with it as Msg-Id, and the stream would then drop the real command
  without a word. It is "s-" and the first 32 hex digits of SHA-256 of the
  Berth-Signature header for a signed command, "r-" and 32 random hex
  digits for an unsigned one: nobody else can produce it beforehand. It is
  computed once per command, so a publication repeated because its PubAck
  did not come is kept once.

  Signing (--sign-secret): headers Berth-Timestamp (Unix seconds) and
  Berth-Signature (v1=<hex HMAC-SHA256 of "<ts>.<subject>.<body>">), and
  Berth-Key: ID with --sign-key-id. A command the worker cannot trust
  (unsigned when it requires signatures, a bad signature or key) is refused
  on <prefix>.evt.<project>.~refused.seq<N>.result, N its sequence in the
  command stream, not on the request's subjects.

  Event signatures (--event-secret): the worker signs each event with the
  same headers and scheme, over the event's subject and body. With the
  secret, an event without a valid signature is neither shown nor used
  (a forged result does not end the wait): one warning line each.

  Text from the wire (log lines, messages, errors, plans, data) is shown
  with escape sequences, carriage returns, other control characters, bidi
  and invisible format characters and invalid UTF-8 written as \x1b, \r,
  \u202e, \xff, and colours removed. --json output stays JSON, with those
  characters as \u escapes.

flags:
`, progName, strings.Join(events.Actions(), ", "), exitConfirm)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// stdio are the standard streams of a run.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// run is the whole command: it parses args, sends the command (or follows
// a request) and prints its events. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, stdio{in: os.Stdin, out: stdout, err: stderr}, os.Getenv)
}

// maxConfirmRounds is how many requests one run sends: the plan, its
// confirmation, and, when the plan changed before it ran (plan_changed,
// with the new plan, asked again on a terminal), the new plan's.
const maxConfirmRounds = 3

// runIO is run with the standard streams and the environment given.
func runIO(ctx context.Context, args []string, std stdio, getenv func(string) string) int {
	stdout, stderr := std.out, std.err
	if len(args) > 0 && args[0] == "completion" {
		return runCompletion(args[1:], stdout, stderr)
	}
	rawStderr := stderr
	stderr = &lockedWriter{w: stderr} // the NATS error handler writes from another goroutine
	o, err := parseArgs(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, getenv)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		fmt.Fprintf(stderr, "usage: %s [flags] <action> <project> [--arg k=v ...]; actions: %s; see %s -h\n",
			progName, strings.Join(events.Actions(), ", "), progName)
		return exitUsage
	}
	for _, w := range o.warnings {
		fmt.Fprintln(stderr, w)
	}

	colorOK := !o.noColor && getenv("NO_COLOR") == ""
	// The publisher asks before it confirms only where someone can answer
	// and read the plan: stdin and stdout on a terminal, plain text.
	interactive := o.follow == "" && o.confirm == "" && !o.jsonOut && !o.quiet && isTerminal(std.in) && isTerminal(stdout)
	r := &renderer{
		out:         stdout,
		errw:        stderr,
		color:       colorOK && isTerminal(stdout),
		errColor:    colorOK && isTerminal(rawStderr),
		jsonMode:    o.jsonOut,
		quiet:       o.quiet,
		verbose:     o.verbose,
		autoConfirm: o.follow == "" && o.confirm == "" && (o.yes || interactive),
		interactive: interactive,
		id:          o.id,
		action:      o.action,
		project:     o.project,
		args:        o.args,
		now:         time.Now,
		loc:         time.Local,
	}
	var newLive func() *liveView
	if !o.jsonOut && !o.quiet {
		// A live view only on a terminal; plain lines otherwise.
		newLive = func() *liveView {
			lv := newLiveView(rawStderr, r.errColor, getenv)
			if lv != nil {
				lv.w, lv.action, lv.verbose = stderr, o.action, o.verbose
			}
			return lv
		}
	}

	// A permission the NATS user lacks shows only as an asynchronous
	// error; it ends the run at once instead of by a timeout.
	asyncErrs := make(chan error, 16)
	natsErrw := &mutableWriter{w: stderr}
	nc, err := connect(o, natsErrw, func(err error) {
		select {
		case asyncErrs <- err:
		default:
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "error: cannot connect to NATS at %s: %s\n", o.server, sanitize(err.Error(), oneLine))
		return exitUnavailable
	}
	// Close, then wait until the asynchronous callbacks queued before the
	// close have run: none writes to stderr after run returns.
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	defer func() {
		nc.Close()
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go cancelOnDenied(ctx, asyncErrs, cancel)

	c := newClient(nc, events.NewSubjects(o.prefix))
	c.signSecret, c.signKeyID = o.signSecret, o.signKeyID

	cmd := o.command()
	var code int
	for round := 1; ; round++ {
		code = request(ctx, c, o, cmd, r, newLive, stderr)
		conf := r.confirmation
		if conf == nil || code == exitInterrupted || code == exitUnavailable {
			break
		}
		if conf.changed && !interactive {
			break // plan_changed is the confirmation's failure: exit 1
		}
		if o.follow != "" || conf.byOther || (!o.yes && !interactive) {
			if o.yes && conf.byOther {
				fmt.Fprintf(stderr, "--yes cannot confirm: project %s needs a second approver, another user confirms with the token\n", sanitize(o.project, oneLine))
			}
			code = confirmExit(o)
			break
		}
		if round >= maxConfirmRounds {
			fmt.Fprintf(stderr, "the plan changed again; not confirmed, nothing was done\n")
			code = exitFailed
			break
		}
		if interactive {
			yes, err := ask(ctx, std.in, stdout, confirmQuestion(o.action, o.project, conf.changed))
			if err != nil {
				fmt.Fprintf(stderr, "\ninterrupted; nothing was confirmed\n")
				return exitInterrupted
			}
			if !yes {
				fmt.Fprintf(stderr, "not confirmed; nothing was done\n")
				code = confirmExit(o)
				break
			}
		} else if !o.quiet && !o.jsonOut {
			fmt.Fprintf(stderr, "confirming (--yes)\n")
		}
		// The confirmation is a command of its own, with the plan's token
		// and the same args.
		cmd = &events.Command{ID: newRequestID(), User: o.user, Args: o.args, Confirm: conf.token}
		r.reset(cmd.ID)
	}

	// A project the user cannot see: one of the projects they can see,
	// when one has a name close to it. Asked only on this error path.
	if res := r.result; res != nil && res.Error != nil && o.project != "" && !o.jsonOut &&
		(res.Error.Code == events.CodeNotFound || res.Error.Code == events.CodeForbidden) {
		// A NATS user that may not ask berth.q.projects gets no
		// suggestion, and no word of the permission it lacks for it.
		natsErrw.mute()
		if s := c.suggestProject(ctx, o.user, o.project); s != "" {
			fmt.Fprintf(stderr, "%s did you mean %s? (%s %s %s)\n", paint(r.errColor, ansiBold, "hint:"), sanitize(s, oneLine),
				progName, shellQuote(o.action), shellQuote(sanitize(s, oneLine)))
		}
	}
	return code
}

// confirmExit is the exit code of a command that ended at its plan.
func confirmExit(o *options) int {
	if o.strictExit {
		return exitConfirm
	}
	return exitOK
}

// newRequestID is a new random request id.
func newRequestID() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }

// request sends cmd (or follows the request of --follow), prints its
// events with r, and returns the exit code.
func request(ctx context.Context, c *client, o *options, cmd *events.Command, r *renderer, newLive func() *liveView, stderr io.Writer) int {
	if newLive != nil {
		if lv := newLive(); lv != nil {
			r.live = lv
			lv.start(100 * time.Millisecond)
			defer func() { lv.stop(false); r.live = nil }()
		}
	}
	deadline := time.Now().Add(o.timeout)
	var src eventSource
	var err error
	var refused string // where the worker would refuse the command as untrusted
	if o.follow != "" {
		src, err = c.follow(ctx, o.project, o.user, o.id)
	} else {
		var seq uint64
		src, seq, err = c.send(ctx, o.project, o.action, cmd, stderr)
		if seq != 0 {
			refused = c.subj.Refused(o.project, fmt.Sprintf("seq%d", seq))
		}
	}
	if denied := deniedCause(ctx); denied != nil {
		err = denied
	}
	if err != nil {
		r.stopLive()
		fmt.Fprintf(stderr, "error: %s\n", sanitize(err.Error(), oneLine)) // may hold the server's text
		if o.follow != "" && o.project == "" && deniedCause(ctx) != nil {
			fmt.Fprintf(stderr, "hint: a NATS user confined to some projects must name the project: %s --follow %s <action> <project>\n",
				progName, o.id)
		}
		return exitUnavailable
	}
	defer src.Close()
	if len(o.eventSecrets) > 0 {
		src = &signedSource{src: src, secrets: o.eventSecrets, warnf: r.warnf}
	}
	var stalled func() string
	if o.follow == "" {
		stalled = func() string { return c.hostDown(o.project, o.user) }
	}
	return await(ctx, src, r, deadline, o.timeout, o.follow != "", refused, stalled)
}

// stallAfter is how long a command may go without any event before the
// publisher asks whether its project's host is down.
var stallAfter = 3 * time.Second

// await prints the events from src until the result, and returns the exit
// code: that of the result, or exitUnavailable when none comes by deadline.
// refused, when set, is the subject the worker would answer on if it
// refused the command as untrusted: a hint when no result comes.
//
// stalled, when set, is asked once when no event came within stallAfter:
// what it returns (the project's host is down) is shown, and the wait goes
// on.
func await(ctx context.Context, src eventSource, r *renderer, deadline time.Time, timeout time.Duration, following bool, refused string, stalled func() string) int {
	seen := map[uint64]bool{}
	var confirmBy time.Time // set by a confirm event: the result should follow it soon
	received := 0
	stallAt := time.Now().Add(stallAfter)
	for {
		until, byConfirm, byStall := deadline, false, false
		if !confirmBy.IsZero() && confirmBy.Before(deadline) {
			until, byConfirm = confirmBy, true
		}
		if stalled != nil && received == 0 && stallAt.Before(until) {
			until, byConfirm, byStall = stallAt, false, true
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		m, err := src.Next(wctx)
		data := m.data
		expired := wctx.Err() != nil
		cancel()
		if err != nil && expired && byStall && ctx.Err() == nil {
			if msg := stalled(); msg != "" {
				r.warnf("waiting: %s\n", msg)
			}
			stalled = nil
			continue
		}
		if err != nil {
			r.stopLive()
			switch {
			case deniedCause(ctx) != nil:
				fmt.Fprintf(r.errw, "error: %s\n", sanitize(deniedCause(ctx).Error(), oneLine))
				return exitUnavailable
			case ctx.Err() != nil:
				fmt.Fprintf(r.errw, "interrupted; the request goes on: follow it with %s --follow %s\n", progName, r.id)
				return exitInterrupted
			case expired && byConfirm:
				// The plan came, its result did not: the plan is what there is.
				if r.pendingConfirmation() {
					return exitFailed
				}
				fmt.Fprintf(r.errw, "no result followed the confirmation request; confirm it with the command above\n")
				return exitFailed
			case expired && following && received == 0:
				fmt.Fprintf(r.errw, "no events for request %s within %s: the id is unknown, its events expired, or the worker is down\n",
					r.id, formatDuration(timeout))
				return exitUnavailable
			case expired:
				fmt.Fprintf(r.errw, "no result within %s; the worker may be down, or still working: follow with %s --follow %s\n",
					formatDuration(timeout), progName, r.id)
				if refused != "" {
					fmt.Fprintf(r.errw, "hint: a command the worker cannot trust (unsigned when it requires signatures, or a signature or key it does not accept) is refused on %s\n",
						refused)
				}
				return exitUnavailable
			default:
				fmt.Fprintf(r.errw, "error: reading events: %s\n", sanitize(err.Error(), oneLine))
				return exitUnavailable
			}
		}
		var ev events.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			r.warnf("warning: ignoring an event that is not valid JSON: %v\n", err)
			continue
		}
		if ev.RequestID != r.id || (r.project != "" && ev.Project != r.project) {
			// Another request's result published on this one's subject,
			// such as through a reply_to aimed here.
			r.warnf("warning: ignoring an event of request %q of project %q on the subject of request %s\n",
				ev.RequestID, ev.Project, r.id)
			continue
		}
		if ev.Seq != 0 {
			if seen[ev.Seq] {
				continue
			}
			seen[ev.Seq] = true
		}
		received++
		r.event(&ev, data)
		switch ev.Kind {
		case events.KindResult:
			return exitCodeFor(&ev)
		case events.KindConfirm:
			confirmBy = time.Now().Add(confirmResultGrace)
		}
	}
}

// exitCodeFor maps a result event to the exit code.
func exitCodeFor(ev *events.Event) int {
	if ev.OK != nil && *ev.OK {
		return exitOK
	}
	return exitFailed
}

// formatDuration prints d briefly: 60s, 90s, 15m, 1h30m.
func formatDuration(d time.Duration) string {
	d = d.Round(time.Millisecond)
	switch {
	case d < time.Second:
		return d.String()
	case d < 2*time.Minute && d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// mutableWriter passes writes to w until mute, then drops them.
type mutableWriter struct {
	mu    sync.Mutex
	w     io.Writer
	muted bool
}

func (m *mutableWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.muted {
		return len(p), nil
	}
	return m.w.Write(p)
}

func (m *mutableWriter) mute() {
	m.mu.Lock()
	m.muted = true
	m.mu.Unlock()
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
