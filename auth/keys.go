package auth

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// keyIDRe is what a key id may be: it travels in a header.
var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// keysFile is the JSON of a --sign-keys file:
//
//	{"keys": [
//	  {"id": "telegram-bot", "secret": "hex:…", "users": ["telegram:*"], "projects": ["*"]},
//	  {"id": "alice-laptop", "secret": "base64:…", "users": ["cli:alice"], "projects": ["shop", "blog"]}
//	]}
type keysFile struct {
	Keys []struct {
		ID       string   `json:"id"`
		Secret   string   `json:"secret"`
		Users    []string `json:"users"`
		Projects []string `json:"projects"`
	} `json:"keys"`
}

// LoadKeys reads the clients' keys from a JSON file (see docs/security.md):
// each key has an id (sent by its holder in the Berth-Key header), a
// secret (plain, hex:… or base64:…, at least MinSecretLen bytes), the
// users it may sign for and the projects it may act on (patterns: exact,
// a prefix ending in "*", or "*"; projects default to "*"). Unknown
// fields, a duplicate id, a key without users are errors.
func LoadKeys(path string) ([]Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	var f keysFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("signing keys %s: %w", path, err)
	}
	if len(f.Keys) == 0 {
		return nil, fmt.Errorf("signing keys %s: no keys", path)
	}
	out := make([]Key, 0, len(f.Keys))
	seen := map[string]bool{}
	for i, k := range f.Keys {
		which := fmt.Sprintf("signing keys %s: key %d", path, i+1)
		switch {
		case !keyIDRe.MatchString(k.ID):
			return nil, fmt.Errorf("%s: id %q must be 1 to 64 characters from A-Z a-z 0-9 _ . : -", which, k.ID)
		case seen[k.ID]:
			return nil, fmt.Errorf("%s: id %q is used twice", which, k.ID)
		case len(k.Users) == 0:
			return nil, fmt.Errorf("%s (%s): users is empty: name the users the key may sign for (\"*\" for any)", which, k.ID)
		}
		seen[k.ID] = true
		secrets, err := ParseSecrets(k.Secret)
		if err != nil || len(secrets) != 1 {
			return nil, fmt.Errorf("%s (%s): secret: %v", which, k.ID, cmpErr(err, "give one secret"))
		}
		projects := k.Projects
		if len(projects) == 0 {
			projects = []string{"*"}
		}
		out = append(out, Key{ID: k.ID, Secret: secrets[0], Users: k.Users, Projects: projects})
	}
	return out, nil
}

func cmpErr(err error, fallback string) any {
	if err != nil {
		return err
	}
	return fallback
}
