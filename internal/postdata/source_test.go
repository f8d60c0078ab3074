package postdata_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
)

func readAll(path string) ([]postdata.Post, error) {
	var out []postdata.Post
	for p, err := range postdata.File(path, 1, 0, -1) {
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

func TestFileReadsALinePerPost(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "posts.txt")
	require.NoError(t, os.WriteFile(path, []byte("good day\r\n\nbad day"), 0o644))
	posts, err := readAll(path)
	require.NoError(t, err)
	require.Len(t, posts, 3)
	assert.Equal(t, []string{"good day", "", "bad day"}, []string{posts[0].Text, posts[1].Text, posts[2].Text})
	assert.Equal(t, int64(3), posts[2].ID)
	n, err := postdata.CountLines(path)
	require.NoError(t, err)
	assert.Equal(t, int64(3), n)
}

// TestFileRefusesWhatIsNotAFileOfPosts: a line longer than MaxLineBytes
// (a binary, a file without line breaks) and a device such as /dev/zero
// fail at once, instead of being read into memory until it runs out.
func TestFileRefusesWhatIsNotAFileOfPosts(t *testing.T) {
	t.Parallel()
	long := filepath.Join(t.TempDir(), "long.txt")
	require.NoError(t, os.WriteFile(long, []byte("ok\n"+strings.Repeat("x", postdata.MaxLineBytes+1)+"\nok\n"), 0o644))
	posts, err := readAll(long)
	require.ErrorContains(t, err, "a line longer than 1048576 bytes")
	assert.Len(t, posts, 1, "the lines before it")
	_, err = postdata.CountLines(long)
	require.ErrorContains(t, err, "line 2: a line longer than 1048576 bytes")

	// File and CountLines draw the line at the same byte, with or without
	// a line ending.
	for _, tc := range []struct {
		text string
		ok   bool
	}{
		{strings.Repeat("x", postdata.MaxLineBytes), true},
		{strings.Repeat("x", postdata.MaxLineBytes-1) + "\n", true},
		{strings.Repeat("x", postdata.MaxLineBytes) + "\n", false},
		{strings.Repeat("x", postdata.MaxLineBytes+1), false},
	} {
		p := filepath.Join(t.TempDir(), "edge.txt")
		require.NoError(t, os.WriteFile(p, []byte(tc.text), 0o644))
		_, ferr := readAll(p)
		_, cerr := postdata.CountLines(p)
		assert.Equal(t, tc.ok, ferr == nil, "File, %d bytes", len(tc.text))
		assert.Equal(t, tc.ok, cerr == nil, "CountLines, %d bytes", len(tc.text))
	}

	_, err = readAll(t.TempDir())
	require.ErrorContains(t, err, "is a device or a folder")
	if runtime.GOOS != "windows" {
		_, err = readAll("/dev/zero")
		require.ErrorContains(t, err, "/dev/zero is a device or a folder, not a file of posts")
		_, err = postdata.CountLines("/dev/zero")
		require.ErrorContains(t, err, "is a device")
	}
}
