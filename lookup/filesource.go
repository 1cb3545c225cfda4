package lookup

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/lookup/zonefile"
)

// FileSource is a Resolver that answers the queries of one list from a
// local file in an rbldnsd format (see package zonefile), such as a zone
// of Abusix's rsync mirror, from memory and without a DNS round trip. The
// query names are the list's own, so that the answers are classified as
// DNS answers are. Watch reloads the file when it changes; a reload that
// fails keeps the data in use.
type FileSource struct {
	path   string
	format zonefile.Format
	suffix string // "." + the list's zone + ".", lowercase

	data atomic.Pointer[fileData]

	// Settle is how long a changed file must stay unchanged before it is
	// read, unless its modification time is older than that already: a
	// file written in place is not read half written. rsync renames a
	// finished file into place, which is read at the next poll.
	Settle time.Duration
	now    func() time.Time

	mu      sync.Mutex // serialises Reload
	pending fileStamp  // a change seen but not read yet
	failed  fileStamp  // the version that failed to load
	lastErr string     // the last error Watch logged; Watch's own
}

type fileData struct {
	zone   *zonefile.Zone
	stamp  fileStamp
	loaded time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{fi.ModTime(), fi.Size()} }

// FileInfo describes the data a FileSource serves.
type FileInfo struct {
	Path    string
	Format  zonefile.Format
	ModTime time.Time // of the file when it was read
	Loaded  time.Time
	Stats   zonefile.Stats
}

// FileZone returns the zone under which a file list's query names are
// made. The names never reach a DNS server, and .invalid (RFC 6761) says
// so in the logs.
func FileZone(listName string) string { return listName + ".file.invalid" }

// NewFileSource reads the file at path, in format f, for a list whose
// query names end in zone.
func NewFileSource(path string, f zonefile.Format, zone string) (*FileSource, error) {
	s := &FileSource{
		path:   path,
		format: f,
		suffix: "." + strings.ToLower(strings.TrimSuffix(zone, ".")) + ".",
		Settle: 2 * time.Second,
		now:    time.Now,
	}
	d, err := s.load()
	if err != nil {
		return nil, err
	}
	s.data.Store(d)
	return s, nil
}

// LookupA implements Resolver. A name outside the list's zone is answered
// REFUSED, as rbldnsd answers it.
func (s *FileSource) LookupA(ctx context.Context, name string) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, fmt.Errorf("zonefile: %w", scrub(err))
	}
	r, _ := s.Peek(name)
	return r, nil
}

// Peek implements Peeker: a file is served from memory, so every name has
// its answer at once.
func (s *FileSource) Peek(name string) (Reply, bool) {
	return s.answer(name), true
}

func (s *FileSource) answer(name string) Reply {
	name = strings.ToLower(dns.Fqdn(name))
	rel, ok := strings.CutSuffix(name, s.suffix)
	if !ok {
		return Reply{Rcode: dns.RcodeRefused}
	}
	vals := s.data.Load().zone.Query(rel)
	if len(vals) == 0 {
		return Reply{Rcode: dns.RcodeNameError}
	}
	out := Reply{Rcode: dns.RcodeSuccess, A: make([]netip.Addr, 0, len(vals))}
	for _, v := range vals {
		if !slices.Contains(out.A, v.A) {
			out.A = append(out.A, v.A)
		}
	}
	return out
}

// Info describes the data in use.
func (s *FileSource) Info() FileInfo {
	d := s.data.Load()
	return FileInfo{Path: s.path, Format: s.format, ModTime: d.stamp.mod, Loaded: d.loaded,
		Stats: d.zone.Stats()}
}

// maxInvalid is how many invalid lines a file may have before it is taken
// as broken: 10, or 1 in 100 of its data lines when that is more. Fewer
// are skipped, as rbldnsd skips them, and logged.
func maxInvalid(dataLines int) int { return max(10, dataLines/100) }

// ErrBrokenFile is wrapped by the error of a file refused as broken.
var ErrBrokenFile = errors.New("broken list file")

// load reads the file. It fails when the file changed while it was read,
// or when too many of its lines are invalid.
func (s *FileSource) load() (*fileData, error) {
	before, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("zonefile: %w", err)
	}
	z, err := zonefile.ParseFile(s.path, s.format)
	if err != nil {
		return nil, fmt.Errorf("zonefile: %w", err)
	}
	after, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("zonefile: %w", err)
	}
	if stampOf(before) != stampOf(after) {
		return nil, fmt.Errorf("zonefile: %s changed while it was read", s.path)
	}
	st := z.Stats()
	if st.Invalid > maxInvalid(st.DataLines) {
		first := ""
		if len(st.Warnings) > 0 {
			first = "; first: " + st.Warnings[0].Error()
		}
		return nil, fmt.Errorf("zonefile: %s: %w: %d of %d lines invalid%s", s.path,
			ErrBrokenFile, st.Invalid, st.DataLines, first)
	}
	return &fileData{zone: z, stamp: stampOf(before), loaded: s.now()}, nil
}

// Reload reads the file again when it changed since it was read and has
// settled (see Settle). It reports whether new data is in use. A file
// that failed to load is not read again until it changes again.
func (s *FileSource) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		return false, fmt.Errorf("zonefile: %w", err)
	}
	st := stampOf(fi)
	switch {
	case st == s.data.Load().stamp:
		s.pending = fileStamp{}
		return false, nil
	case st == s.failed:
		return false, nil
	case s.now().Sub(st.mod) < s.Settle && st != s.pending:
		s.pending = st // perhaps still being written: look again next time
		return false, nil
	}
	d, err := s.load()
	if err != nil {
		s.failed = st
		return false, err
	}
	s.data.Store(d)
	s.pending, s.failed = fileStamp{}, fileStamp{}
	return true, nil
}

// Watch polls the file every interval until ctx ends and reloads it when
// it changed, logging each reload and each failure (once per failure).
func (s *FileSource) Watch(ctx context.Context, interval time.Duration, log *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		changed, err := s.Reload()
		switch {
		case err != nil:
			if err.Error() != s.lastErr {
				log.Error("list file not reloaded; the data read before stays in use",
					zap.String("file", s.path), zap.Error(err))
			}
			s.lastErr = err.Error()
		case changed:
			s.lastErr = ""
			LogFileLoaded(log, s.Info(), time.Since(start))
		}
	}
}

// LogFileLoaded logs a file's reload at info, and its invalid lines, if
// any, at warn.
func LogFileLoaded(log *zap.Logger, fi FileInfo, took time.Duration) {
	log.Info("list file loaded", zap.String("file", fi.Path),
		zap.String("format", string(fi.Format)), zap.Int("entries", fi.Stats.Entries),
		zap.Time("modified", fi.ModTime), zap.Duration("took", took))
	if fi.Stats.Invalid > 0 || len(fi.Stats.Skipped) > 0 {
		var lines []string
		for _, w := range fi.Stats.Warnings {
			lines = append(lines, w.Error())
		}
		log.Warn("list file has lines that were skipped", zap.String("file", fi.Path),
			zap.Int("invalid", fi.Stats.Invalid), zap.Strings("first", lines),
			zap.Strings("datasets_not_served", fi.Stats.Skipped))
	}
}

// WatchFiles runs Watch for every list that is served from a file, until
// ctx ends, logging through the checker's logger. It first logs what each
// file holds.
func (c *Checker) WatchFiles(ctx context.Context, interval time.Duration) {
	done := make(chan struct{})
	n := 0
	for _, l := range c.lists {
		fs, ok := l.source.(*FileSource)
		if !ok {
			continue
		}
		log := c.log.With(zap.String("list", l.Name))
		LogFileLoaded(log, fs.Info(), 0)
		n++
		go func() {
			fs.Watch(ctx, interval, log)
			done <- struct{}{}
		}()
	}
	for range n {
		<-done
	}
}
