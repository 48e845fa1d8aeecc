package handlers

import (
	"context"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/berth-ops/berth/filesync"
)

// newReleaseID sorts by time and names its request.
func newReleaseID(now time.Time, requestID string) string {
	id := requestID
	if len(id) > 12 {
		id = id[:12]
	}
	return now.UTC().Format("20060102T150405.000Z") + "-" + id
}

// backupTag is the tag that keeps a service's pre-release image.
func backupTag(composeProject, service, releaseID string) string {
	tag := service + "-" + strings.NewReplacer(".", "", "T", "t", "Z", "z").Replace(releaseID)
	tag = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, tag)
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return "berth-release/" + composeProject + ":" + tag
}

// diff plans ws against production with the production directory's hash
// cache, so a repeated plan (plan, confirm, status) does not re-read
// unchanged files, across worker restarts too.
func (s *Service) diff(ctx context.Context, ws, prod string, man *filesync.Manifest, rules *filesync.Rules) (*filesync.Plan, error) {
	path := s.State.HashCachePath(prod)
	hc, err := filesync.LoadHashCache(path)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("hash cache ignored")
	}
	fp, err := filesync.Diff(ctx, ws, prod, man, rules, filesync.WithHashCache(hc))
	if err == nil {
		if err := hc.Save(path); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot save the hash cache")
		}
	}
	return fp, err
}
