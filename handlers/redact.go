package handlers

import (
	"os"
	"sync"
	"time"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
	"github.com/berth-ops/berth/redact"
)

// envSecrets caches the values of each production .env file, keyed by
// directory and invalidated by the file's modification time.
type envSecrets struct {
	mu    sync.Mutex
	byDir map[string]envEntry
}

type envEntry struct {
	mtime   time.Time
	checked time.Time
	secrets []string
}

// envRecheck is how often a production .env is looked at again: once per
// log line would cost more than the redaction itself.
const envRecheck = time.Second

// redact masks secrets in text bound for events, results and logs: common
// token shapes, and the values of the project's production .env file.
func (s *Service) redact(p *berth.Project, text string) string {
	if s.Redactor == nil {
		return text
	}
	return s.Redactor.Redact(text, s.projectSecrets(p))
}

// redactLines redacts the text of log lines in place.
func (s *Service) redactLines(p *berth.Project, lines []events.LogLine) {
	for i := range lines {
		lines[i].Line = s.redact(p, lines[i].Line)
	}
}

func (s *Service) redactAll(p *berth.Project, lines []string) []string {
	for i := range lines {
		lines[i] = s.redact(p, lines[i])
	}
	return lines
}

// projectSecrets reads production's .env through an os.Root.
func (s *Service) projectSecrets(p *berth.Project) []string {
	if p == nil || p.Production == "" {
		return nil
	}
	s.env.mu.Lock()
	if e, ok := s.env.byDir[p.Production]; ok && time.Since(e.checked) < envRecheck {
		s.env.mu.Unlock()
		return e.secrets
	}
	s.env.mu.Unlock()
	root, err := os.OpenRoot(p.Production)
	if err != nil {
		return nil
	}
	defer root.Close()
	now := time.Now()
	s.env.mu.Lock()
	defer s.env.mu.Unlock()
	if s.env.byDir == nil {
		s.env.byDir = map[string]envEntry{}
	}
	st, err := root.Stat(".env")
	if err != nil || !st.Mode().IsRegular() || st.Size() > 1<<20 {
		s.env.byDir[p.Production] = envEntry{checked: now}
		return nil
	}
	if e, ok := s.env.byDir[p.Production]; ok && e.mtime.Equal(st.ModTime()) {
		e.checked = now
		s.env.byDir[p.Production] = e
		return e.secrets
	}
	b, err := root.ReadFile(".env")
	if err != nil {
		return nil
	}
	e := envEntry{mtime: st.ModTime(), checked: now, secrets: redact.EnvSecrets(b)}
	s.env.byDir[p.Production] = e
	return e.secrets
}
