package health

import (
	"context"
	"io"
	"net/http"
)

// httpProber GETs a URL and compares the status.
type httpProber struct {
	url    string
	expect int
	client *http.Client
}

// NewHTTPProber checks that GET url answers the status expect.
func NewHTTPProber(url string, expect int) Prober {
	return &httpProber{url: url, expect: expect, client: &http.Client{
		// A fresh connection per probe: a kept-alive connection would hide a
		// service that stopped accepting.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// The status of the URL itself is what the operator configured.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (p *httpProber) Probe(ctx context.Context) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("User-Agent", "dsr-agent-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return Result{}, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != p.expect {
		return Result{}, failf("http status %d, want %d", resp.StatusCode, p.expect)
	}
	return Result{}, nil
}
