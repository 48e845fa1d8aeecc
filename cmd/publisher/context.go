package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// natsContext is a connection context as the nats CLI saves it
// (`nats context add NAME …`), in $XDG_CONFIG_HOME/nats/context/NAME.json,
// by default ~/.config/nats/context/NAME.json.
type natsContext struct {
	Description string `json:"description"`
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`

	// BerthUser is the publisher's own key: the Berth user (cli:alice)
	// who asks, when neither --user nor BERTH_USER says. The nats CLI
	// ignores it. ("user" is the NATS login, not a Berth user.)
	BerthUser string `json:"berth_user"`

	// Settings the publisher cannot honour: a context that sets one is
	// refused rather than half used.
	NSC         string `json:"nsc"`
	SocksProxy  string `json:"socks_proxy"`
	JSDomain    string `json:"jetstream_domain"`
	JSAPIPrefix string `json:"jetstream_api_prefix"`
	UserJWT     string `json:"user_jwt"`
}

// natsContextDir is where the nats CLI keeps its contexts.
func natsContextDir(getenv func(string) string) (string, error) {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats", "context"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("cannot find the nats CLI's contexts: %v", err)
		}
	}
	return filepath.Join(home, ".config", "nats", "context"), nil
}

// natsContextPath is the file of context name: a name from the nats CLI's
// context directory, or a path to a context file (as `nats --context`
// also takes).
func natsContextPath(name string, getenv func(string) string) (string, error) {
	if strings.ContainsRune(name, os.PathSeparator) || strings.HasSuffix(name, ".json") {
		return expandHome(name, getenv), nil
	}
	if name == "" || strings.Contains(name, "..") {
		return "", fmt.Errorf("invalid context name %q", name)
	}
	dir, err := natsContextDir(getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, name+".json"), nil
}

// loadNATSContext reads context name. Paths in it (creds, nkey, cert, key,
// ca) may start with ~ or hold $VARIABLES, as the nats CLI allows.
func loadNATSContext(name string, getenv func(string) string) (*natsContext, error) {
	path, err := natsContextPath(name, getenv)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		known := knownNATSContexts(getenv)
		hint := "none saved; create one with: nats context add " + name + " --server URL"
		if len(known) > 0 {
			hint = "known: " + strings.Join(known, ", ")
		}
		return nil, fmt.Errorf("unknown NATS context %q (%s); %s", name, path, hint)
	}
	if err != nil {
		return nil, fmt.Errorf("NATS context %q: %v", name, err)
	}
	var c natsContext
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("NATS context %q (%s) is not valid JSON: %v", name, path, err)
	}
	for key, v := range map[string]string{"nsc": c.NSC, "socks_proxy": c.SocksProxy,
		"jetstream_domain": c.JSDomain, "jetstream_api_prefix": c.JSAPIPrefix, "user_jwt": c.UserJWT} {
		if v != "" {
			return nil, fmt.Errorf("NATS context %q sets %s, which the publisher does not support; use a context without it", name, key)
		}
	}
	for _, p := range []*string{&c.Creds, &c.NKey, &c.Cert, &c.Key, &c.CA} {
		if *p != "" {
			*p = expandHome(os.Expand(*p, getenv), getenv)
		}
	}
	return &c, nil
}

// knownNATSContexts lists the saved contexts' names.
func knownNATSContexts(getenv func(string) string) []string {
	dir, err := natsContextDir(getenv)
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	return names
}

func expandHome(p string, getenv func(string) string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home := getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		return filepath.Join(home, strings.TrimPrefix(p, "~"))
	}
	return p
}

// applyNATSContext fills the connection options of o from context c where
// neither a flag (set holds the flags given) nor a BERTH_* variable gave
// them: flag > variable > context > default. The authentication of the
// context (user and password, creds, nkey, token) is taken whole or not at
// all: not when the command line or environment names any of them.
func applyNATSContext(o *options, c *natsContext, set map[string]bool, getenv func(string) string) {
	given := func(env string, names ...string) bool {
		for _, n := range names {
			if set[n] {
				return true
			}
		}
		return getenv(env) != ""
	}
	take := func(dst *string, v, env string, names ...string) {
		if v != "" && !given(env, names...) {
			*dst = v
		}
	}
	take(&o.server, c.URL, "BERTH_NATS_URL", "server", "s", "nats-url")
	take(&o.tlsCA, c.CA, "BERTH_NATS_TLS_CA", "nats-tls-ca", "tls-ca")
	if !given("BERTH_NATS_TLS_CERT", "nats-tls-cert", "tls-cert") && !given("BERTH_NATS_TLS_KEY", "nats-tls-key", "tls-key") {
		take(&o.tlsCert, c.Cert, "BERTH_NATS_TLS_CERT")
		take(&o.tlsKey, c.Key, "BERTH_NATS_TLS_KEY")
	}
	take(&o.inboxPrefix, c.InboxPrefix, "BERTH_NATS_INBOX_PREFIX", "nats-inbox-prefix")
	o.tlsFirst = o.tlsFirst || c.TLSFirst

	authGiven := given("BERTH_NATS_CREDS", "nats-creds", "creds") || given("BERTH_NATS_NKEY", "nats-nkey", "nkey") ||
		given("BERTH_NATS_USER", "nats-user") || given("BERTH_NATS_PASSWORD", "nats-password")
	if authGiven {
		return
	}
	// One method, in the nats CLI's order: user, creds, nkey, token.
	switch {
	case c.User != "":
		o.natsUser, o.natsPassword = c.User, c.Password
	case c.Creds != "":
		o.creds = c.Creds
	case c.NKey != "":
		o.nkey = c.NKey
	case c.Token != "":
		o.token = c.Token
	}
}
