package docker

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// composeVersionTimeout bounds `docker-compose version --short` of a
// standalone candidate.
const composeVersionTimeout = 10 * time.Second

// composePluginDirs returns the directories the docker CLI looks for its
// plugins in, in the order it does: $DOCKER_CONFIG/cli-plugins,
// ~/.docker/cli-plugins, then the system directories.
func composePluginDirs(getenv func(string) string, home string) []string {
	var dirs []string
	if d := getenv("DOCKER_CONFIG"); d != "" {
		dirs = append(dirs, filepath.Join(d, "cli-plugins"))
	}
	if home != "" {
		dirs = append(dirs, filepath.Join(home, ".docker", "cli-plugins"))
	}
	return append(dirs,
		"/usr/local/lib/docker/cli-plugins",
		"/usr/local/libexec/docker/cli-plugins",
		"/usr/lib/docker/cli-plugins",
		"/usr/libexec/docker/cli-plugins",
	)
}

// findCompose returns the argument vector that runs Compose v2: the first
// executable docker-compose in dirs (the plugin binary, which takes the
// arguments of `docker compose` without "compose"), else a docker-compose
// found by lookPath whose version (as version reports it for that path)
// is 2 or later, else {"docker", "compose"}.
func findCompose(dirs []string, lookPath func(string) (string, error), version func(path string) string) []string {
	for _, d := range dirs {
		p := filepath.Join(d, "docker-compose")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return []string{p}
		}
	}
	if p, err := lookPath("docker-compose"); err == nil && composeV2(version(p)) {
		return []string{p}
	}
	return []string{"docker", "compose"}
}

// composeV2 reports whether a version of Compose ("2.26.1", "v2.27.0",
// "2.26.1-4") is 2 or later; the Python docker-compose is 1.x.
func composeV2(v string) bool {
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".")
	n, err := strconv.Atoi(major)
	return err == nil && n >= 2
}

// composeVersion returns what `path version --short` prints, "" when it
// fails or takes longer than composeVersionTimeout.
func composeVersion(path string) string {
	cmd := exec.Command(path, "version", "--short")
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		return ""
	}
	timer := time.AfterFunc(composeVersionTimeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Wait(); err != nil {
		return ""
	}
	return out.String()
}

// defaultCompose finds Compose v2 on this machine (see findCompose).
func defaultCompose() []string {
	home, _ := os.UserHomeDir()
	return findCompose(composePluginDirs(os.Getenv, home), exec.LookPath, composeVersion)
}
