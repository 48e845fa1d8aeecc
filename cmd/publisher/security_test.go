package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/berth-ops/berth/auth"
	"github.com/berth-ops/berth/events"
)

const testSignSecret = "a-shared-secret-of-some-length"

func TestSignSetsVerifiableHeaders(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	c := &client{signSecret: []byte(testSignSecret), now: clock}
	msg := nats.NewMsg("berth.cmd.po.deploy")
	msg.Header.Set(jetstream.MsgIDHeader, "r1")
	msg.Data = []byte(`{"id":"r1","user":"cli:ann","confirm":"yes"}`)
	c.sign(msg)

	if msg.Header.Get(auth.HeaderTimestamp) != "1800000000" || !strings.HasPrefix(msg.Header.Get(auth.HeaderSignature), "v1=") {
		t.Fatalf("headers %v", msg.Header)
	}
	v := &auth.Verifier{Secrets: [][]byte{[]byte("the-old-secret-0123456789"), []byte(testSignSecret)}, Now: clock}
	sig, err := v.Verify(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatalf("the worker's verifier refuses the publisher's signature: %v", err)
	}
	if sig == nil || sig.Sig != msg.Header.Get(auth.HeaderSignature) {
		t.Fatalf("Verify returned %+v", sig)
	}
	if _, err := v.Verify("berth.cmd.other.deploy", msg.Header, msg.Data); events.ErrorCode(err) != events.CodeUnauthorized {
		t.Fatalf("the signature verified for another project: %v", err)
	}

	// Without a secret nothing is added.
	plain := nats.NewMsg("berth.cmd.po.status")
	(&client{}).sign(plain)
	if len(plain.Header) != 0 {
		t.Fatalf("an unsigned client set headers %v", plain.Header)
	}
}

func TestParseArgsSigning(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte(testSignSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hexFile := filepath.Join(dir, "hex")
	if err := os.WriteFile(hexFile, []byte("hex:000102030405060708090a0b0c0d0e0f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"flag", []string{"--sign-secret", testSignSecret}, nil, testSignSecret},
		{"env", nil, map[string]string{"BERTH_SIGN_SECRET": testSignSecret}, testSignSecret},
		{"flag wins over env", []string{"--sign-secret", testSignSecret}, map[string]string{"BERTH_SIGN_SECRET": "another-secret-0123456789"}, testSignSecret},
		{"file", []string{"--sign-secret-file", file}, nil, testSignSecret},
		{"file from env", nil, map[string]string{"BERTH_SIGN_SECRET_FILE": file}, testSignSecret},
		{"hex in a file", []string{"--sign-secret-file", hexFile}, nil, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"},
		{"a list signs with its first", []string{"--sign-secret", testSignSecret + ",the-old-secret-0123456789"}, nil, testSignSecret},
		{"none", nil, nil, ""},
	}
	for _, c := range cases {
		o, err := parseArgs(append([]string{"status", "po"}, c.args...), env(c.env))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(o.signSecret) != c.want {
			t.Fatalf("%s: secret %q, want %q", c.name, o.signSecret, c.want)
		}
	}

	for name, args := range map[string][]string{
		"too short":    {"--sign-secret", "hunter2"},
		"bad hex":      {"--sign-secret", "hex:xyz-not-hex-at-all-xyz"},
		"both":         {"--sign-secret", testSignSecret, "--sign-secret-file", file},
		"missing file": {"--sign-secret-file", filepath.Join(dir, "nope")},
	} {
		_, err := parseArgs(append([]string{"status", "po"}, args...), env(nil))
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("%s: err %v, want a usage error", name, err)
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "xyz-not-hex") {
			t.Fatalf("%s: the error shows the secret: %v", name, err)
		}
	}
}

func TestParseArgsNATSAuth(t *testing.T) {
	// The worker's flag names, the short names, and the worker's variables.
	o, err := parseArgs([]string{"status", "po", "--nats-creds", "/c", "--nats-tls-ca", "/ca",
		"--nats-tls-cert", "/cert", "--nats-tls-key", "/key", "--nats-url", "tls://h:4222"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.creds != "/c" || o.tlsCA != "/ca" || o.tlsCert != "/cert" || o.tlsKey != "/key" || o.server != "tls://h:4222" {
		t.Fatalf("worker flag names: %+v", o)
	}
	o, err = parseArgs([]string{"status", "po", "--nkey", "/seed", "--tls-ca", "/ca"}, env(nil))
	if err != nil || o.nkey != "/seed" || o.tlsCA != "/ca" {
		t.Fatalf("short names: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"status", "po"}, env(map[string]string{
		"BERTH_NATS_NKEY": "/seed", "BERTH_NATS_USER": "bot", "BERTH_NATS_PASSWORD": "pw",
		"BERTH_NATS_TLS_CA": "/ca", "BERTH_NATS_TLS_CERT": "/cert", "BERTH_NATS_TLS_KEY": "/key",
		"BERTH_NATS_INBOX_PREFIX": "_INBOX_bot",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o.nkey != "/seed" || o.natsUser != "bot" || o.natsPassword != "pw" || o.tlsCA != "/ca" ||
		o.tlsCert != "/cert" || o.tlsKey != "/key" || o.inboxPrefix != "_INBOX_bot" {
		t.Fatalf("environment: %+v", o)
	}
	o, err = parseArgs([]string{"status", "po", "--nats-password", "flag-pw"},
		env(map[string]string{"BERTH_NATS_USER": "bot", "BERTH_NATS_PASSWORD": "env-pw"}))
	if err != nil || o.natsPassword != "flag-pw" {
		t.Fatalf("--nats-password over the environment: %q, %v", o.natsPassword, err)
	}

	for name, args := range map[string][]string{
		"creds and nkey":        {"--nats-creds", "/c", "--nats-nkey", "/n"},
		"cert without key":      {"--nats-tls-cert", "/cert"},
		"password without user": {"--nats-password", "pw"},
		"bad inbox prefix":      {"--nats-inbox-prefix", "_INBOX.>"},
	} {
		var ue *usageError
		if _, err := parseArgs(append([]string{"status", "po"}, args...), env(nil)); !errors.As(err, &ue) {
			t.Fatalf("%s: err %v, want a usage error", name, err)
		}
	}
}

func TestUsageHidesSecrets(t *testing.T) {
	var out bytes.Buffer
	printUsage(&out, env(map[string]string{
		"BERTH_NATS_PASSWORD": "nats-pw-do-not-print", "BERTH_SIGN_SECRET": "sign-secret-do-not-print",
		"BERTH_NATS_CREDS": "/etc/berth/bot.creds",
	}))
	text := out.String()
	if strings.Contains(text, "do-not-print") {
		t.Fatalf("the usage text shows a secret from the environment:\n%s", text)
	}
	for _, want := range []string{"-sign-secret", "-nats-creds", "-nats-nkey", "-nats-user", "-nats-password",
		"-nats-tls-ca", "-nats-tls-cert", "-nats-tls-key", "/etc/berth/bot.creds"} {
		if !strings.Contains(text, want) {
			t.Fatalf("the usage text lacks %q:\n%s", want, text)
		}
	}
}

func TestRunSigned(t *testing.T) {
	s, _, js := setupStreams(t)
	wait := fakeWorker(t, js, statusEvents)
	code, out, errw := runPublisher(t, s, "status", "po", "--id", "req-signed", "--sign-secret", testSignSecret)
	got := wait()
	if code != exitOK {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	v := &auth.Verifier{Secrets: [][]byte{[]byte(testSignSecret)}}
	if _, err := v.Verify(got.subject, got.header, got.data); err != nil {
		t.Fatalf("the command as the worker received it does not verify: %v (headers %v)", err, got.header)
	}
	sum := sha256.Sum256([]byte(got.header.Get(auth.HeaderSignature)))
	if want := "s-" + hex.EncodeToString(sum[:])[:32]; got.msgID != want {
		t.Fatalf("Nats-Msg-Id %q, want %q (from the signature)", got.msgID, want)
	}
	if got.header.Get(auth.HeaderKey) != "" {
		t.Fatalf("a Berth-Key header without --sign-key-id: %v", got.header)
	}
}

// botPermissions is the permission set docs/security.md gives a bot of
// project alpha, with the inbox prefix it subscribes to.
func botPermissions(inbox string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"berth.cmd.alpha.>",
			"$JS.API.STREAM.NAMES",
			"$JS.API.CONSUMER.CREATE.BERTH_EVT.*.berth.evt.alpha.>",
			"$JS.API.CONSUMER.MSG.NEXT.BERTH_EVT.*",
			"$JS.API.CONSUMER.INFO.BERTH_EVT.*",
			"$JS.API.CONSUMER.DELETE.BERTH_EVT.*",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"berth.evt.alpha.>", inbox + ".>"}},
	}
}

// TestRunWithPermissions runs the publisher as bots confined to project
// alpha by the permissions of docs/security.md.
func TestRunWithPermissions(t *testing.T) {
	s, _, js := setupStreams(t, []*server.User{
		{Username: "worker", Password: "worker-pw"},
		// Live events only: the minimal set, with the shared inbox.
		{Username: "bot-live", Password: "bot-live-pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"berth.cmd.alpha.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"berth.evt.alpha.>", "_INBOX.>"}},
		}},
		{Username: "bot-a", Password: "bot-a-pw", Permissions: botPermissions("_INBOX_bot_a")},
	}...)

	as := func(user string, args ...string) (int, string, string) {
		t.Helper()
		a := append([]string{"--nats-user", user}, args...)
		if user == "bot-a" {
			a = append(a, "--nats-inbox-prefix", "_INBOX_bot_a")
		}
		t.Setenv("BERTH_NATS_PASSWORD", user+"-pw")
		return runPublisher(t, s, a...)
	}

	// The minimal bot sends and watches its project.
	wait := fakeWorker(t, js, statusEvents)
	code, out, errw := as("bot-live", "status", "alpha", "--id", "live-1")
	wait()
	if code != exitOK {
		t.Fatalf("bot-live, status alpha: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}

	// Another project: refused at once, and nothing is sent.
	start := time.Now()
	code, _, errw = as("bot-live", "status", "beta", "--id", "live-2")
	if code != exitUnavailable || !strings.Contains(errw, `Permissions Violation for Subscription to "berth.evt.beta.test:1.live-2.>"`) ||
		!strings.Contains(errw, "docs/security.md") {
		t.Fatalf("bot-live, status beta: exit %d, stderr %q", code, errw)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refusal took %v", d)
	}

	// The full bot set, with a private inbox: send, then replay by id.
	wait = fakeWorker(t, js, statusEvents)
	code, out, errw = as("bot-a", "status", "alpha", "--id", "a-1")
	wait()
	if code != exitOK {
		t.Fatalf("bot-a, status alpha: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errw)
	}
	code, out2, errw := as("bot-a", "--follow", "a-1", "status", "alpha", "--timeout", "10s")
	if code != exitOK || out2 != out {
		t.Fatalf("bot-a, --follow a-1 status alpha: exit %d\nstdout:\n%s\nstderr:\n%s", code, out2, errw)
	}
	// Without the project, the consumer's filter spans every project:
	// refused at once, with a hint.
	start = time.Now()
	code, _, errw = as("bot-a", "--follow", "a-1", "--timeout", "10s")
	if code != exitUnavailable || !strings.Contains(errw, "Permissions Violation for Publish to") ||
		!strings.Contains(errw, "hint: a NATS user confined to some projects must name the project") {
		t.Fatalf("bot-a, --follow a-1: exit %d, stderr %q", code, errw)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
}
