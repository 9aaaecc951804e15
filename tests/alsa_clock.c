/* clock: ALSA PCMs with a sound card's clock, for the fault suite.
 *
 * The PulseAudio room never reports a capture overrun (the pulse plugin clamps its fake
 * ring buffer and the server drops data silently), reports playback underruns late or not
 * at all, and this machine has no sound card. This ALSA ioplug plugin behaves like one:
 * frames move at the configured rate by CLOCK_MONOTONIC, poll() wakes the application as
 * periods fill or empty, and an application that falls behind gets alsa-lib's real xrun
 * (-EPIPE, state XRUN), exactly what pyalsaaudio returns from a USB card when the process is
 * starved of CPU (capture overrun) or has nothing to play in time (playback underrun).
 *
 * Capture: `file` is raw S16_LE interleaved, played in a loop at the device's rate, indexed
 * by wall time since the PCM was opened (frames missed in an overrun are gone, as on a
 * card); no file means silence. Playback: `file` receives every frame written, in order.
 *
 * `freeze` (optional) names a file: while it exists the card's clock stands still, as when a
 * USB device hangs or an I2S codec loses its clock. No xrun, no error: playback stops taking
 * frames, capture stops delivering them. Removing the file lets the clock run on from where
 * it stopped.
 *
 * `ppm` (optional, integer) runs the card's clock that far off the system's, as every real
 * card's crystal is (a USB card's or a HAT's: tens of ppm; CLOCK_MONOTONIC follows NTP).
 *
 *   pcm_type.clock { lib "/path/libasound_module_pcm_clock.so" }
 *   pcm.clockmic { type clock; rate 48000; channels 2; file "/path/content.raw" }
 *   pcm.clockspk { type clock; rate 48000; channels 2; file "/path/played.raw"; freeze "/path/f" }
 */
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
	snd_pcm_ioplug_t io;
	int tfd;
	unsigned int rate, channels;
	int running;
	double t_open, t_start;
	snd_pcm_uframes_t base; /* content frame at the stream's start */
	int16_t *data;
	size_t frames;
	FILE *out; /* playback: where written frames go */
	char *freeze; /* while this file exists the clock stands still */
	double frozen_since, frozen_total;
	double speed; /* card seconds per system second (1 + ppm / 1e6) */
} clockpcm_t;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* the card's clock: wall time less the time spent frozen, run at the card's speed */
static double card_s(clockpcm_t *c)
{
	double t = now_s();
	if (c->freeze) {
		int frozen = access(c->freeze, F_OK) == 0;
		if (frozen && !c->frozen_since)
			c->frozen_since = t;
		else if (!frozen && c->frozen_since) {
			c->frozen_total += t - c->frozen_since;
			c->frozen_since = 0;
		}
		if (c->frozen_since)
			t = c->frozen_since;
	}
	return c->t_open + (t - c->frozen_total - c->t_open) * c->speed;
}

static snd_pcm_uframes_t produced(clockpcm_t *c)
{
	if (!c->running)
		return 0;
	return (snd_pcm_uframes_t)((card_s(c) - c->t_start) * c->rate);
}

static void arm(clockpcm_t *c, long ns)
{
	struct itimerspec its;
	memset(&its, 0, sizeof its);
	its.it_interval.tv_sec = ns / 1000000000L;
	its.it_interval.tv_nsec = ns % 1000000000L;
	if (ns) { /* first expiry half a millisecond late: the period is surely complete then */
		long first = ns + 500000L;
		its.it_value.tv_sec = first / 1000000000L;
		its.it_value.tv_nsec = first % 1000000000L;
	}
	timerfd_settime(c->tfd, 0, &its, NULL);
}

static int cm_start(snd_pcm_ioplug_t *io)
{
	clockpcm_t *c = io->private_data;
	c->t_start = card_s(c);
	c->base = (snd_pcm_uframes_t)((c->t_start - c->t_open) * c->rate);
	c->running = 1;
	/* wake once per period, as a card's interrupt does (a faster timer would charge the
	 * application wake-ups no card causes: bench/idle.py counts them) */
	arm(c, (long)((double)io->period_size * 1e9 / c->rate));
	return 0;
}

static int cm_stop(snd_pcm_ioplug_t *io)
{
	clockpcm_t *c = io->private_data;
	c->running = 0;
	arm(c, 0);
	return 0;
}

static int cm_prepare(snd_pcm_ioplug_t *io)
{
	return cm_stop(io); /* after an xrun alsa-lib prepares without stopping us first */
}

static snd_pcm_sframes_t cm_pointer(snd_pcm_ioplug_t *io)
{
	clockpcm_t *c = io->private_data;
	snd_pcm_uframes_t hw = produced(c);
	if (!c->running)
		return 0;
	if (io->stream == SND_PCM_STREAM_CAPTURE && hw >= io->appl_ptr + io->buffer_size)
		return -EPIPE; /* the reader fell a whole buffer behind: overrun */
	if (io->stream == SND_PCM_STREAM_PLAYBACK && hw >= io->appl_ptr)
		return -EPIPE; /* the card played everything it was given: underrun */
	return (snd_pcm_sframes_t)(hw % io->buffer_size);
}

static snd_pcm_sframes_t cm_transfer(snd_pcm_ioplug_t *io, const snd_pcm_channel_area_t *areas,
				     snd_pcm_uframes_t offset, snd_pcm_uframes_t size)
{
	clockpcm_t *c = io->private_data;
	int16_t *dst = (int16_t *)((char *)areas->addr + (areas->first + areas->step * offset) / 8);
	snd_pcm_uframes_t pos = c->base + io->appl_ptr;
	if (io->stream == SND_PCM_STREAM_PLAYBACK) {
		if (c->out)
			fwrite(dst, 2 * c->channels, size, c->out);
		return (snd_pcm_sframes_t)size;
	}
	for (snd_pcm_uframes_t i = 0; i < size; i++) {
		for (unsigned int ch = 0; ch < c->channels; ch++) {
			int16_t v = 0;
			if (c->frames)
				v = c->data[((pos + i) % c->frames) * c->channels + ch];
			dst[i * c->channels + ch] = v;
		}
	}
	return (snd_pcm_sframes_t)size;
}

static int cm_poll_revents(snd_pcm_ioplug_t *io, struct pollfd *pfd, unsigned int nfds,
			   unsigned short *revents)
{
	clockpcm_t *c = io->private_data;
	uint64_t expirations;
	(void)pfd;
	(void)nfds;
	if (read(c->tfd, &expirations, sizeof expirations) < 0) {
		/* nothing expired yet (non-blocking timerfd): fall through and look */
	}
	snd_pcm_uframes_t hw = produced(c);
	*revents = 0;
	if (io->stream == SND_PCM_STREAM_PLAYBACK) {
		/* room for a period, or an underrun to report */
		if (!c->running || hw + io->buffer_size >= io->appl_ptr + io->period_size)
			*revents = POLLOUT;
	} else if (!c->running || hw >= io->appl_ptr + io->period_size) {
		*revents = POLLIN; /* a period is ready, or an overrun to report */
	}
	return 0;
}

static int cm_close(snd_pcm_ioplug_t *io)
{
	clockpcm_t *c = io->private_data;
	close(c->tfd);
	if (c->out)
		fclose(c->out);
	free(c->data);
	free(c->freeze);
	free(c);
	return 0;
}

static const snd_pcm_ioplug_callback_t callbacks = {
	.start = cm_start,
	.stop = cm_stop,
	.prepare = cm_prepare,
	.pointer = cm_pointer,
	.transfer = cm_transfer,
	.close = cm_close,
	.poll_revents = cm_poll_revents,
};

static int load(clockpcm_t *c, const char *path)
{
	FILE *f = fopen(path, "rb");
	long n;
	if (!f)
		return -errno;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	c->frames = (size_t)n / (2 * c->channels);
	c->data = malloc(c->frames * 2 * c->channels + 2);
	if (!c->data || fread(c->data, 2 * c->channels, c->frames, f) != c->frames) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	return 0;
}

SND_PCM_PLUGIN_DEFINE_FUNC(clock)
{
	snd_config_iterator_t i, next;
	long rate = 48000, channels = 2, ppm = 0;
	const char *file = NULL, *freeze = NULL;
	clockpcm_t *c;
	int err;
	static const unsigned int access[] = {SND_PCM_ACCESS_RW_INTERLEAVED};
	static const unsigned int formats[] = {SND_PCM_FORMAT_S16_LE};

	(void)root;
	snd_config_for_each(i, next, conf)
	{
		snd_config_t *n = snd_config_iterator_entry(i);
		const char *id;
		if (snd_config_get_id(n, &id) < 0)
			continue;
		if (!strcmp(id, "comment") || !strcmp(id, "type") || !strcmp(id, "hint"))
			continue;
		if (!strcmp(id, "rate") && snd_config_get_integer(n, &rate) == 0)
			continue;
		if (!strcmp(id, "channels") && snd_config_get_integer(n, &channels) == 0)
			continue;
		if (!strcmp(id, "file") && snd_config_get_string(n, &file) == 0)
			continue;
		if (!strcmp(id, "freeze") && snd_config_get_string(n, &freeze) == 0)
			continue;
		if (!strcmp(id, "ppm") && snd_config_get_integer(n, &ppm) == 0)
			continue;
		SNDERR("clock: unknown or bad field %s", id);
		return -EINVAL;
	}
	c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->rate = (unsigned int)rate;
	c->channels = (unsigned int)channels;
	c->t_open = now_s();
	c->speed = 1.0 + (double)ppm / 1e6;
	if (file && stream == SND_PCM_STREAM_PLAYBACK) {
		c->out = fopen(file, "ab");
		if (!c->out) {
			err = -errno;
			free(c);
			return err;
		}
	} else if (file && (err = load(c, file)) < 0) {
		SNDERR("clock: cannot read %s", file);
		free(c);
		return err;
	}
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (c->tfd < 0) {
		err = -errno;
		if (c->out)
			fclose(c->out);
		free(c->data);
		free(c);
		return err;
	}
	c->io.version = SND_PCM_IOPLUG_VERSION;
	c->io.name = "clock: a PCM with a sound card's clock";
	c->io.callback = &callbacks;
	c->io.private_data = c;
	c->io.poll_fd = c->tfd;
	c->io.poll_events = stream == SND_PCM_STREAM_PLAYBACK ? POLLOUT : POLLIN;
	c->io.mmap_rw = 0;

	err = snd_pcm_ioplug_create(&c->io, name, stream, mode);
	if (err < 0) {
		close(c->tfd);
		if (c->out)
			fclose(c->out);
		free(c->data);
		free(c);
		return err;
	}
	c->freeze = freeze ? strdup(freeze) : NULL; /* freed by cm_close from here on */
	if ((err = snd_pcm_ioplug_set_param_list(&c->io, SND_PCM_IOPLUG_HW_ACCESS, 1, access)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_list(&c->io, SND_PCM_IOPLUG_HW_FORMAT, 1, formats)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&c->io, SND_PCM_IOPLUG_HW_CHANNELS,
						   c->channels, c->channels)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&c->io, SND_PCM_IOPLUG_HW_RATE, c->rate,
						   c->rate)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&c->io, SND_PCM_IOPLUG_HW_PERIOD_BYTES, 64,
						   1 << 20)) < 0 ||
	    (err = snd_pcm_ioplug_set_param_minmax(&c->io, SND_PCM_IOPLUG_HW_PERIODS, 2, 64)) < 0) {
		snd_pcm_ioplug_delete(&c->io);
		return err;
	}
	*pcmp = c->io.pcm;
	return 0;
}

SND_PCM_PLUGIN_SYMBOL(clock);
