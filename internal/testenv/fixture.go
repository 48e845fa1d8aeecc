package testenv

import (
	"fmt"
	"slices"
)

// Fixture is a compose project under testdata that SampleApp can bring up
// (WithFixture). Both run the same static app binary
// (testdata/sampleapp/server) in a locally built FROM scratch image named
// <project>-app:latest.
type Fixture int

const (
	// SampleFixture is testdata/sampleapp, the default: compose.yml with
	// service web (HTTP on 8080, healthcheck) and service worker (no
	// healthcheck).
	SampleFixture Fixture = iota
	// RealFixture is testdata/realapp, the shapes of real users' projects:
	// compose.yml plus the override compose.prod.yml; service web (HTTP on
	// 8080, healthcheck, env_file app.env, depends on migrate completing
	// successfully), one-shots migrate and seed, worker (restart
	// unless-stopped, no healthcheck), and a named volume data mounted at
	// /data by web, migrate and seed. SampleApp also creates the
	// production-only files (ProductionOnly) in its production directory.
	RealFixture
	// ProxyFixture is testdata/proxyapp, zero-downtime deploys: service
	// web (healthcheck, no published port, deploy.update_config.order
	// start-first, stop_grace_period 1s) behind service proxy (the app in
	// proxy mode, its own image, publishing 8080 on an ephemeral
	// 127.0.0.1 port), which resolves web through Docker's DNS for each
	// request. HTTPService is proxy.
	ProxyFixture
)

// fixtureSpec describes a fixture's files and services.
type fixtureSpec struct {
	name     string
	dir      string   // relative to the module root
	files    []string // compose files, in -f order
	copy     []string // the other files copied into the production directory
	services []string
	oneShots []string
	volumes  []string
	// binaries are where the app binary goes (default: app).
	binaries []string
	// prebuilt are images SampleApp builds once, before the first up, by
	// build context (relative to the project directory) → image name
	// suffix (<project>-<suffix>:latest): images a deploy does not
	// rebuild, as a project's proxy image is.
	prebuilt map[string]string
	// httpService serves HTTP on 8080 (default: web).
	httpService string
	// prodOnly are files SampleApp writes into the production directory
	// only (they are not in testdata), with their content.
	prodOnly []prodFile
}

type prodFile struct {
	path    string // slash-separated, relative to the production directory
	content string
}

var fixtures = [...]fixtureSpec{
	SampleFixture: {
		name:     "sampleapp",
		dir:      "testdata/sampleapp",
		files:    []string{SampleComposeFile},
		copy:     []string{"Dockerfile", "version.txt"},
		services: []string{"web", "worker"},
	},
	RealFixture: {
		name:     "realapp",
		dir:      "testdata/realapp",
		files:    []string{"compose.yml", "compose.prod.yml"},
		copy:     []string{"Dockerfile", "version.txt", "app.env"},
		services: []string{"web", "migrate", "seed", "worker"},
		oneShots: []string{"migrate", "seed"},
		volumes:  []string{"data"},
		prodOnly: []prodFile{
			{".env", "# Production only: not in the repository. A deploy must keep it.\nBERTH_TEST_SECRET=production-secret\n"},
			{"data/production.txt", "written in production; a deploy must keep it\n"},
		},
	},
	ProxyFixture: {
		name:        "proxyapp",
		dir:         "testdata/proxyapp",
		files:       []string{"compose.yml"},
		copy:        []string{"Dockerfile", "version.txt", "proxy/Dockerfile"},
		services:    []string{"proxy", "web"},
		binaries:    []string{"app", "proxy/app"},
		prebuilt:    map[string]string{"proxy": "proxy"},
		httpService: "proxy",
	},
}

func (f Fixture) spec() *fixtureSpec {
	if f < 0 || int(f) >= len(fixtures) {
		panic(fmt.Sprintf("testenv: unknown fixture %d", int(f)))
	}
	return &fixtures[f]
}

// String returns the fixture's name: "sampleapp", "realapp" or "proxyapp".
func (f Fixture) String() string {
	if f < 0 || int(f) >= len(fixtures) {
		return fmt.Sprintf("Fixture(%d)", int(f))
	}
	return fixtures[f].name
}

// Dir returns the fixture's directory, relative to the module root.
func (f Fixture) Dir() string { return f.spec().dir }

// Files returns the fixture's compose files, in the order of their -f
// flags.
func (f Fixture) Files() []string { return slices.Clone(f.spec().files) }

// Services returns the services of the fixture's compose files.
func (f Fixture) Services() []string { return slices.Clone(f.spec().services) }

// OneShots returns the services that run to completion (a container that
// exits 0 is their success), none for the sample app.
func (f Fixture) OneShots() []string { return slices.Clone(f.spec().oneShots) }

// LongRunning returns the services that keep running: Services but the
// OneShots.
func (f Fixture) LongRunning() []string {
	var out []string
	for _, s := range f.spec().services {
		if !slices.Contains(f.spec().oneShots, s) {
			out = append(out, s)
		}
	}
	return out
}

// Volumes returns the named volumes of the fixture's compose files (the
// Docker volume is <project>_<name>).
func (f Fixture) Volumes() []string { return slices.Clone(f.spec().volumes) }

// HTTPService returns the service that serves HTTP: web, but proxy in
// the proxy fixture.
func (f Fixture) HTTPService() string {
	if s := f.spec().httpService; s != "" {
		return s
	}
	return "web"
}

// HTTPPort returns the container port HTTPService listens on, published on
// an ephemeral 127.0.0.1 port.
func (f Fixture) HTTPPort() int { return 8080 }

// ProductionOnly returns the files, relative to the production directory
// and slash-separated, that SampleApp creates in the production directory
// although they are not in the fixture's testdata: what an operator keeps
// next to the compose files in production and a deploy must leave alone.
// The real app has .env (interpolation variables, secrets) and
// data/production.txt (a host data directory); the sample app has none.
func (f Fixture) ProductionOnly() []string {
	var out []string
	for _, p := range f.spec().prodOnly {
		out = append(out, p.path)
	}
	return out
}
