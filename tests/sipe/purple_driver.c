/*
 * A headless libpurple client that signs one pidgin-sipe (prpl-sipe) account on and
 * reports what happens, for homeredirect's interoperability test.
 *
 *   purple_driver --user-dir DIR --username 'alice@example.com,EXAMPLE\alice'
 *                 --password PW --server HOST:PORT [--transport tcp|tls]
 *                 [--authentication ntlm|krb5] [--timeout SECONDS] [--linger SECONDS]
 *                 [--accept-requests yes|no] [--ca-dir DIR] [--plugin-dir DIR]...
 *
 * Every event is one JSON object on a line of stdout ({"event": "started" | "progress" |
 * "sipe" | "signed-on" | "error" | "disconnected" | "timeout" | "request" | "done", ...}). Exit status: 0 when the
 * account signed on (and, with --linger, was still connected that many seconds later),
 * 1 on a connection error, 2 on a timeout, 3 on bad arguments or set-up failure.
 *
 * libpurple's debug output (which carries pidgin-sipe's own: each SIP message in and out,
 * the NTLM flags and the signature strings it computes) goes to stderr when the environment variable PURPLE_DRIVER_DEBUG is set;
 * the pidgin-sipe lines that mark sign-on's steps (a signature verified or not, a REGISTER
 * response handled, a connection made or dropped) are "sipe" events either way.
 *
 * --authentication is pidgin-sipe's own account setting (default ntlm). With krb5 and
 * Single Sign-On off, pidgin-sipe gets alice's TGT itself from the password
 * (gss_acquire_cred_with_password for "user@DOMAIN" from the login "DOMAIN\user"), so
 * the environment only needs KRB5_CONFIG naming the realm's KDC.
 *
 * A question libpurple would ask the user (request UI, e.g. "accept this certificate?")
 * is reported as a "request" event and fails the run (exit 1), unless --accept-requests
 * yes is given, when its default action is taken. The test trusts its CA with --ca-dir (a
 * directory of PEM CA certificates, searched before the system's) instead, so that TLS
 * is verified for real and no question comes up.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <purple.h>

#define UI_ID "homeredirect-test"

static GMainLoop *loop;
static int exit_status = 2;
static gboolean signed_on;
static guint linger_seconds;

/* ---- JSON output ------------------------------------------------------------------ */

static void json_string(GString *out, const char *text)
{
	const unsigned char *p;

	g_string_append_c(out, '"');
	for (p = (const unsigned char *) (text ? text : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			g_string_append_printf(out, "\\%c", *p);
		else if (*p < 0x20)
			g_string_append_printf(out, "\\u%04x", *p);
		else
			g_string_append_c(out, (char) *p);
	}
	g_string_append_c(out, '"');
}

/* One event: name plus (key, string value) pairs ending with NULL. */
static void emit(const char *event, ...)
{
	GString *out = g_string_new("{\"event\": ");
	va_list args;
	const char *key;

	json_string(out, event);
	va_start(args, event);
	while ((key = va_arg(args, const char *)) != NULL) {
		g_string_append(out, ", ");
		json_string(out, key);
		g_string_append(out, ": ");
		json_string(out, va_arg(args, const char *));
	}
	va_end(args);
	g_string_append(out, "}\n");
	fputs(out->str, stdout);
	fflush(stdout);
	g_string_free(out, TRUE);
}

static void finish(int status)
{
	char text[16];

	exit_status = status;
	g_snprintf(text, sizeof text, "%d", status);
	emit("done", "status", text, NULL);
	g_main_loop_quit(loop);
}

/* ---- the event loop: libpurple on GLib's main loop ----------------------------------- */

struct io_watch {
	PurpleInputFunction function;
	gpointer data;
};

static gboolean io_ready(GIOChannel *channel, GIOCondition condition, gpointer user_data)
{
	struct io_watch *watch = user_data;
	PurpleInputCondition ready = 0;

	if (condition & (G_IO_IN | G_IO_HUP | G_IO_ERR))
		ready |= PURPLE_INPUT_READ;
	if (condition & (G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL))
		ready |= PURPLE_INPUT_WRITE;
	watch->function(watch->data, g_io_channel_unix_get_fd(channel), ready);
	return TRUE;
}

static guint input_add(int fd, PurpleInputCondition condition, PurpleInputFunction function,
		       gpointer data)
{
	struct io_watch *watch = g_new0(struct io_watch, 1);
	GIOCondition wanted = 0;
	GIOChannel *channel;
	guint id;

	watch->function = function;
	watch->data = data;
	if (condition & PURPLE_INPUT_READ)
		wanted |= G_IO_IN | G_IO_HUP | G_IO_ERR;
	if (condition & PURPLE_INPUT_WRITE)
		wanted |= G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL;
	channel = g_io_channel_unix_new(fd);
	id = g_io_add_watch_full(channel, G_PRIORITY_DEFAULT, wanted, io_ready, watch, g_free);
	g_io_channel_unref(channel);
	return id;
}

static PurpleEventLoopUiOps eventloop_ops = {
	.timeout_add = g_timeout_add,
	.timeout_remove = g_source_remove,
	.input_add = input_add,
	.input_remove = g_source_remove,
	.timeout_add_seconds = g_timeout_add_seconds,
};

/* ---- debug output to stderr, on request ------------------------------------------ */

static gboolean debug_wanted;

/* pidgin-sipe's debug lines that mark the steps of sign-on, reported as "sipe" events so
 * that the test can tell a verified signature from a missing one, and which Kerberos
 * principal pidgin-sipe asked the KDC for and why GSS-API failed. */
static const char *const milestones[] = {
	"signature of incoming message",
	"process_register_response:",
	"message without authentication data",
	"sip_transport_connected:",
	"sip_transport_drop:",
	"sip_sec_acquire_cred__gssapi: username",
	"sip_sec_gssapi: GSSAPI error",
	NULL,
};

static void debug_print(PurpleDebugLevel level, const char *category, const char *text)
{
	const char *const *milestone;

	(void) level;
	if (debug_wanted) {
		fprintf(stderr, "%s: %s", category ? category : "-", text);
		fflush(stderr);
	}
	if (category == NULL || strcmp(category, "sipe") != 0)
		return;
	for (milestone = milestones; *milestone; milestone++) {
		if (strstr(text, *milestone) != NULL) {
			gchar *line = g_strchomp(g_strdup(text));

			emit("sipe", "text", line, NULL);
			g_free(line);
			return;
		}
	}
}

static gboolean debug_enabled(PurpleDebugLevel level, const char *category)
{
	(void) level;
	return debug_wanted || (category != NULL && strcmp(category, "sipe") == 0);
}

static PurpleDebugUiOps debug_ops = {
	.print = debug_print,
	.is_enabled = debug_enabled,
};

/* ---- connection progress and errors ---------------------------------------------- */

static void connect_progress(PurpleConnection *gc, const char *text, size_t step,
			     size_t step_count)
{
	char numbers[64];

	(void) gc;
	g_snprintf(numbers, sizeof numbers, "%zu/%zu", step, step_count);
	emit("progress", "text", text, "step", numbers, NULL);
}

static void report_disconnect_reason(PurpleConnection *gc, PurpleConnectionError reason,
				     const char *text)
{
	char code[16];

	(void) gc;
	g_snprintf(code, sizeof code, "%d", (int) reason);
	emit("error", "reason", code, "text", text, NULL);
	finish(1);
}

static void disconnected(PurpleConnection *gc)
{
	(void) gc;
	emit("disconnected", NULL);
	if (g_main_loop_is_running(loop) && exit_status == 2 && !signed_on)
		finish(1);
}

static PurpleConnectionUiOps connection_ops = {
	.connect_progress = connect_progress,
	.disconnected = disconnected,
	.report_disconnect_reason = report_disconnect_reason,
};

static gboolean linger_over(gpointer data)
{
	(void) data;
	finish(0);
	return FALSE;
}

static void on_signed_on(PurpleConnection *gc, gpointer data)
{
	PurpleAccount *account = purple_connection_get_account(gc);

	(void) data;
	signed_on = TRUE;
	emit("signed-on", "account", purple_account_get_username(account), NULL);
	if (linger_seconds == 0)
		finish(0);
	else
		g_timeout_add_seconds(linger_seconds, linger_over, NULL);
}

/* ---- questions libpurple would ask a user ------------------------------------------ */

static gboolean accept_requests;

static void *request_action(const char *title, const char *primary, const char *secondary,
			    int default_action, PurpleAccount *account, const char *who,
			    PurpleConversation *conv, void *user_data, size_t action_count,
			    va_list actions)
{
	size_t index;

	(void) account;
	(void) who;
	(void) conv;
	emit("request", "title", title, "primary", primary, "secondary", secondary, NULL);
	if (!accept_requests) {
		/* A question means something was not as it should be (an untrusted
		 * certificate, most likely): fail rather than guess. */
		finish(1);
		return NULL;
	}
	for (index = 0; index < action_count; index++) {
		const char *label = va_arg(actions, const char *);
		PurpleRequestActionCb callback = va_arg(actions, PurpleRequestActionCb);

		(void) label;
		if ((int) index == default_action && callback != NULL)
			callback(user_data, (int) index);
	}
	return NULL;
}

static PurpleRequestUiOps request_ops = {
	.request_action = request_action,
};

/* ---- set-up --------------------------------------------------------------------- */

static gboolean timed_out(gpointer data)
{
	(void) data;
	emit("timeout", NULL);
	finish(2);
	return FALSE;
}

static void ui_init(void)
{
	purple_connections_set_ui_ops(&connection_ops);
	purple_request_set_ui_ops(&request_ops);
}

static PurpleCoreUiOps core_ops = {
	.debug_ui_init = NULL,
	.ui_init = ui_init,
};

static void usage(void)
{
	fputs("usage: purple_driver --user-dir DIR --username NAME --password PW"
	      " --server HOST:PORT [--transport tcp|tls] [--authentication ntlm|krb5]"
	      " [--timeout S] [--linger S]"
	      " [--accept-requests yes|no] [--ca-dir DIR] [--plugin-dir DIR]...\n",
	      stderr);
	exit(3);
}

int main(int argc, char **argv)
{
	const char *user_dir = NULL, *username = NULL, *password = NULL, *server = NULL;
	const char *transport = "tcp";
	const char *authentication = "ntlm";
	const char *ca_dir = NULL;
	guint timeout_seconds = 30;
	GPtrArray *plugin_dirs = g_ptr_array_new();
	PurpleAccount *account;
	PurpleSavedStatus *status;
	PurplePlugin *prpl;
	guint i;
	int arg;

	for (arg = 1; arg < argc; arg++) {
		const char *name = argv[arg];
		const char *value = arg + 1 < argc ? argv[arg + 1] : NULL;

		if (value == NULL)
			usage();
		arg++;
		if (strcmp(name, "--user-dir") == 0)
			user_dir = value;
		else if (strcmp(name, "--username") == 0)
			username = value;
		else if (strcmp(name, "--password") == 0)
			password = value;
		else if (strcmp(name, "--server") == 0)
			server = value;
		else if (strcmp(name, "--transport") == 0)
			transport = value;
		else if (strcmp(name, "--authentication") == 0)
			authentication = value;
		else if (strcmp(name, "--timeout") == 0)
			timeout_seconds = (guint) strtoul(value, NULL, 10);
		else if (strcmp(name, "--linger") == 0)
			linger_seconds = (guint) strtoul(value, NULL, 10);
		else if (strcmp(name, "--accept-requests") == 0)
			accept_requests = strcmp(value, "yes") == 0;
		else if (strcmp(name, "--ca-dir") == 0)
			ca_dir = value;
		else if (strcmp(name, "--plugin-dir") == 0)
			g_ptr_array_add(plugin_dirs, (gpointer) value);
		else
			usage();
	}
	if (!user_dir || !username || !password || !server || timeout_seconds == 0)
		usage();

	debug_wanted = g_getenv("PURPLE_DRIVER_DEBUG") != NULL;
	loop = g_main_loop_new(NULL, FALSE);

	purple_util_set_user_dir(user_dir);
	/* Not enabled, which would also print everything to stdout; verbose, which is what
	 * makes pidgin-sipe produce its debug lines for our debug UI ops. */
	purple_debug_set_enabled(FALSE);
	purple_debug_set_verbose(TRUE);
	purple_debug_set_ui_ops(&debug_ops);
	purple_core_set_ui_ops(&core_ops);
	purple_eventloop_set_ui_ops(&eventloop_ops);
	for (i = 0; i < plugin_dirs->len; i++)
		purple_plugins_add_search_path(g_ptr_array_index(plugin_dirs, i));

	if (!purple_core_init(UI_ID)) {
		emit("error", "reason", "setup", "text", "purple_core_init failed", NULL);
		return 3;
	}
	if (ca_dir != NULL)
		purple_certificate_add_ca_search_path(ca_dir);
	purple_set_blist(purple_blist_new());
	purple_blist_load();
	purple_prefs_load();
	purple_plugins_load_saved("/purple/plugins/loaded");

	prpl = purple_find_prpl("prpl-sipe");
	if (prpl == NULL) {
		emit("error", "reason", "setup", "text", "prpl-sipe not found (pidgin-sipe)", NULL);
		return 3;
	}

	purple_signal_connect(purple_connections_get_handle(), "signed-on", &loop,
			      PURPLE_CALLBACK(on_signed_on), NULL);

	account = purple_account_new(username, "prpl-sipe");
	purple_account_set_password(account, password);
	purple_account_set_remember_password(account, FALSE);
	purple_account_set_string(account, "server", server);
	purple_account_set_string(account, "transport", transport);
	purple_account_set_string(account, "authentication", authentication);
	purple_account_set_bool(account, "sso", FALSE);
	purple_accounts_add(account);
	purple_account_set_enabled(account, UI_ID, TRUE);

	status = purple_savedstatus_new(NULL, PURPLE_STATUS_AVAILABLE);
	purple_savedstatus_activate(status);

	g_timeout_add_seconds(timeout_seconds, timed_out, NULL);
	emit("started", "server", server, "transport", transport, NULL);
	g_main_loop_run(loop);

	/* No orderly libpurple shutdown: it would try to sign off over the network. */
	fflush(stdout);
	fflush(stderr);
	_exit(exit_status);
}
