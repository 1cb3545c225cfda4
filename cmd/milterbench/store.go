package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/authbl-milter/authbl-milter/action"
)

// memStore is an account store in a map, for -store memory: it shows what
// the milter costs without the account store's own cost. The milter's
// stores are SQLite and Redis; this one keeps nothing across runs.
type memStore struct {
	mu    sync.Mutex
	flags map[string]action.Flag
}

func newMemStore() *memStore { return &memStore{flags: make(map[string]action.Flag)} }

func (m *memStore) Get(_ context.Context, account string) (action.Flag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.flags[strings.ToLower(account)]
	if !ok || (!f.ExpiresAt.IsZero() && time.Now().After(f.ExpiresAt)) {
		return action.Flag{}, action.ErrNotFound
	}
	return f, nil
}

func (m *memStore) Put(_ context.Context, f action.Flag) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := strings.ToLower(f.Account)
	if old, ok := m.flags[key]; ok {
		old.Hits++
		old.LastSeen, old.ExpiresAt = f.LastSeen, f.ExpiresAt
		m.flags[key] = old
		return false, nil
	}
	f.Account, f.Hits = key, 1
	m.flags[key] = f
	return true, nil
}

func (m *memStore) Release(_ context.Context, account string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := strings.ToLower(account)
	if _, ok := m.flags[key]; !ok {
		return action.ErrNotFound
	}
	delete(m.flags, key)
	return nil
}

func (m *memStore) List(context.Context) ([]action.Flag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []action.Flag
	for _, f := range m.flags {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b action.Flag) int { return a.FlaggedAt.Compare(b.FlaggedAt) })
	return out, nil
}

func (m *memStore) Close() error { return nil }
