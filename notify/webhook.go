package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Headers of a webhook request.
const (
	// SignatureHeader carries "sha256=" and the lowercase hex HMAC-SHA256
	// of the body under notify.webhook_secret, when one is set.
	SignatureHeader = "X-Authbl-Signature"
	// DeliveryHeader carries the notification's id, the same on every
	// attempt, so that a receiver can drop a repeated delivery.
	DeliveryHeader = "X-Authbl-Delivery"
)

// Sign returns the value of SignatureHeader for body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// permanentError is a delivery failure that no retry can mend: the
// receiver refused the request as such.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// webhook posts notifications.
type webhook struct {
	client  *http.Client
	secret  []byte
	timeout time.Duration
}

func newWebhook(secret string, timeout time.Duration) *webhook {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &webhook{
		client: &http.Client{
			Transport: tr,
			// A redirected POST would turn into a GET: take the
			// redirect as the answer, which fails the delivery.
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		secret:  []byte(secret),
		timeout: timeout,
	}
}

// post delivers one notification. A 2xx answer is success. 408, 425, 429
// and 5xx answers, timeouts and network errors are worth a retry; any
// other answer is a permanentError.
func (w *webhook) post(ctx context.Context, url, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "authbl-milter")
	req.Header.Set(DeliveryHeader, id)
	if len(w.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.secret, body))
	}

	resp, err := w.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // the URL, which may hold a password, stays out
		}
		return fmt.Errorf("POST: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout, c == http.StatusTooEarly,
		c == http.StatusTooManyRequests, c >= 500:
		return fmt.Errorf("HTTP %s", resp.Status)
	default:
		return permanentError{fmt.Errorf("HTTP %s", resp.Status)}
	}
}
