package postdata

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// MaxLineBytes is the longest line of a posts file: a post is a few
// hundred bytes, and a file without line breaks (a binary, /dev/zero)
// must fail instead of being read into memory whole.
const MaxLineBytes = 1 << 20

// openPosts opens a posts file: a regular file or a pipe, not a device or
// a folder.
func openPosts(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read posts: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read posts: %w", err)
	}
	if m := st.Mode(); m&os.ModeDevice != 0 || m.IsDir() {
		f.Close()
		return nil, fmt.Errorf("read posts: %s is a device or a folder, not a file of posts (one per line)", path)
	}
	return f, nil
}

// readLine reads one line with its line ending, refusing one longer than
// MaxLineBytes.
func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLineBytes {
			return "", fmt.Errorf("a line longer than %d bytes: not a file of posts, one per line", MaxLineBytes)
		}
		line = append(line, chunk...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return string(line), err
		}
	}
}

// File yields one post per line of the file at path: post_id is
// firstID plus the line's index (so with firstID 1, the line number), text
// is the line without its line ending, created_at is now. Empty lines are
// posts with empty text (the job marks them skipped). A line longer than
// MaxLineBytes, a device and a folder are refused. Only lines with index
// in [from, to) are yielded; to < 0 means to the end.
func File(path string, firstID int64, from, to int64) iter.Seq2[Post, error] {
	return func(yield func(Post, error) bool) {
		f, err := openPosts(path)
		if err != nil {
			yield(Post{}, err)
			return
		}
		defer f.Close()
		now := time.Now().UTC()
		r := bufio.NewReaderSize(f, 1<<16)
		for i := int64(0); ; i++ {
			line, err := readLine(r)
			if errors.Is(err, io.EOF) && line == "" {
				return
			}
			if err != nil && !errors.Is(err, io.EOF) {
				yield(Post{}, fmt.Errorf("read posts %s line %d: %w", path, i+1, err))
				return
			}
			if to >= 0 && i >= to {
				return
			}
			if i < from {
				continue
			}
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			if !yield(Post{ID: firstID + i, Text: line, CreatedAt: now}, nil) {
				return
			}
		}
	}
}

// CountLines counts the posts File would yield for path, refusing what
// File refuses.
func CountLines(path string) (int64, error) {
	f, err := openPosts(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n, lineLen int64
	var last byte = '\n'
	buf := make([]byte, 1<<16)
	for {
		k, err := f.Read(buf)
		for _, b := range buf[:k] {
			// The limit as File applies it: at most MaxLineBytes with
			// the line ending.
			if lineLen++; lineLen > MaxLineBytes {
				return 0, fmt.Errorf("read posts %s line %d: a line longer than %d bytes: not a file of posts, one per line", path, n+1, MaxLineBytes)
			}
			if b == '\n' {
				n++
				lineLen = 0
			}
		}
		if k > 0 {
			last = buf[k-1]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read posts %s: %w", path, err)
		}
	}
	if last != '\n' {
		n++
	}
	return n, nil
}

// Words for generated sample posts.
var (
	sampleSubjects = []string{"the new phone", "this coffee", "the match last night", "my commute", "the concert",
		"the update", "our team", "the weather", "this movie", "the customer service", "the train", "the election debate",
		"the new album", "breakfast", "the meeting", "the season finale", "the airline", "my landlord", "the conference keynote"}
	samplePositive = []string{"is amazing", "made my day", "was absolutely brilliant", "is so good, love it", "exceeded every expectation",
		"was great fun", "is wonderful", "deserves every award", "is the best thing this week"}
	sampleNegative = []string{"is terrible", "ruined my morning", "was a complete disaster", "is awful and I hate it",
		"is broken again", "was so disappointing", "is the worst", "made me angry", "is a total waste of money"}
	sampleNeutral = []string{"starts at 9", "was on channel 4", "is scheduled for Tuesday", "has a new version number",
		"is in the north building", "was announced today", "comes in two sizes", "moved to the second floor"}
	sampleTails   = []string{"", "", "", " #monday", " #news", " 🙂", " 😡", " !!!", " lol", " :(", " :)", " #fail", " #win", " 🎉"}
	sampleAuthors = []string{"ana", "ben", "chen", "dara", "eli", "fatima", "goran", "hana", "ivan", "jules", "kofi", "lena"}
	sampleLangs   = []string{"en", "en", "en", "en", "es", "fr", "de", "pt"}
	sampleForeign = map[string][]string{
		"es": {"me encanta este café", "el tren llega tarde otra vez", "la reunión es a las diez"},
		"fr": {"ce film est magnifique", "la grève bloque tout, quelle horreur", "le marché ouvre à huit heures"},
		"de": {"das Konzert war wunderbar", "der Zug ist schon wieder zu spät", "das Treffen ist am Dienstag"},
		"pt": {"adorei o show de ontem", "o serviço foi péssimo", "a reunião foi adiada"},
	}
)

// Sample yields n varied, deterministic sample posts with ids
// firstID.. : positive, negative and neutral ones, emoji, several
// languages, retweets that repeat an earlier text, and a few empty and
// very long ones.
func Sample(n int64, firstID int64, seed uint64) iter.Seq2[Post, error] {
	return func(yield func(Post, error) bool) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		recent := make([]string, 0, 64)
		pick := func(s []string) string { return s[rng.IntN(len(s))] }
		for i := range n {
			p := Post{ID: firstID + i, Author: pick(sampleAuthors), Lang: pick(sampleLangs),
				CreatedAt: base.Add(time.Duration(i) * 7 * time.Second)}
			r := rng.IntN(100)
			switch {
			case r < 1:
				p.Text = ""
			case r < 2:
				p.Text = strings.Repeat("so much to say about "+pick(sampleSubjects)+" ", 300)
			case r < 8 && len(recent) > 0:
				p.Text = "RT " + recent[rng.IntN(len(recent))]
			case p.Lang != "en":
				p.Text = pick(sampleForeign[p.Lang]) + pick(sampleTails)
			default:
				var mood []string
				switch rng.IntN(3) {
				case 0:
					mood = samplePositive
				case 1:
					mood = sampleNegative
				default:
					mood = sampleNeutral
				}
				subj := pick(sampleSubjects)
				p.Text = strings.ToUpper(subj[:1]) + subj[1:] + " " + pick(mood) + pick(sampleTails)
			}
			if len(p.Text) > 0 && len(p.Text) < 200 {
				if len(recent) == cap(recent) {
					recent = recent[1:]
				}
				recent = append(recent, p.Text)
			}
			if !yield(p, nil) {
				return
			}
		}
	}
}
