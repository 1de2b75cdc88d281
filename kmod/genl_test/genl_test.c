// SPDX-License-Identifier: GPL-2.0
/*
 * genl_test: a generic netlink family for genl-gateway's end-to-end test,
 * compatible with the classic generic netlink example.
 *
 *   family    "genl_test", version 1
 *   command   GENL_TEST_C_MSG = 1, taking GENL_TEST_ATTR_MSG = 1, a
 *             NUL-terminated string of at most 256 bytes
 *   groups    genl_mcgrp0, genl_mcgrp1, genl_mcgrp2
 *
 * A timer multicasts "Hello group genl_mcgrpN" to each group every
 * period_ms (module parameter, default 5000). The command's handler logs
 * the sender's port and message and, beyond the classic example, replies
 * with an echo and multicasts the message to group 0 so that other
 * listeners see it.
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/timer.h>
#include <linux/version.h>
#include <net/genetlink.h>

#define GENL_TEST_FAMILY_NAME "genl_test"
#define GENL_TEST_ATTR_MSG_MAX 256

enum genl_test_attrs {
	GENL_TEST_ATTR_UNSPEC,
	GENL_TEST_ATTR_MSG,
	__GENL_TEST_ATTR_MAX,
};
#define GENL_TEST_ATTR_MAX (__GENL_TEST_ATTR_MAX - 1)

enum genl_test_cmds {
	GENL_TEST_C_UNSPEC,
	GENL_TEST_C_MSG,
	__GENL_TEST_C_MAX,
};

enum genl_test_groups {
	GENL_TEST_MCGRP0,
	GENL_TEST_MCGRP1,
	GENL_TEST_MCGRP2,
};

static unsigned int period_ms = 5000;
module_param(period_ms, uint, 0444);
MODULE_PARM_DESC(period_ms, "milliseconds between the timer's multicasts (default 5000)");

static const struct genl_multicast_group genl_test_mcgrps[] = {
	[GENL_TEST_MCGRP0] = { .name = "genl_mcgrp0" },
	[GENL_TEST_MCGRP1] = { .name = "genl_mcgrp1" },
	[GENL_TEST_MCGRP2] = { .name = "genl_mcgrp2" },
};

static const struct nla_policy genl_test_policy[GENL_TEST_ATTR_MAX + 1] = {
	[GENL_TEST_ATTR_MSG] = { .type = NLA_NUL_STRING, .len = GENL_TEST_ATTR_MSG_MAX },
};

static struct genl_family genl_test_family;
static struct timer_list genl_test_timer;

/* Send msg to one of the family's groups. */
static int genl_test_multicast(unsigned int group, const char *msg, gfp_t gfp)
{
	struct sk_buff *skb;
	void *hdr;
	int ret;

	skb = genlmsg_new(NLMSG_GOODSIZE, gfp);
	if (!skb)
		return -ENOMEM;
	hdr = genlmsg_put(skb, 0, 0, &genl_test_family, 0, GENL_TEST_C_MSG);
	if (!hdr) {
		nlmsg_free(skb);
		return -EMSGSIZE;
	}
	ret = nla_put_string(skb, GENL_TEST_ATTR_MSG, msg);
	if (ret) {
		genlmsg_cancel(skb, hdr);
		nlmsg_free(skb);
		return ret;
	}
	genlmsg_end(skb, hdr);
	/* -ESRCH only means nobody listens to the group right now. */
	ret = genlmsg_multicast(&genl_test_family, skb, 0, group, gfp);
	return ret == -ESRCH ? 0 : ret;
}

static void genl_test_timer_fn(struct timer_list *unused)
{
	char msg[32];
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(genl_test_mcgrps); i++) {
		snprintf(msg, sizeof(msg), "Hello group %s", genl_test_mcgrps[i].name);
		genl_test_multicast(i, msg, GFP_ATOMIC);
	}
	mod_timer(&genl_test_timer, jiffies + msecs_to_jiffies(period_ms));
}

static int genl_test_rx_msg(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *reply;
	const char *msg;
	void *hdr;
	int ret;

	if (!info->attrs[GENL_TEST_ATTR_MSG]) {
		NL_SET_ERR_MSG(info->extack, "genl_test: the message attribute (1) is missing");
		return -EINVAL;
	}
	msg = nla_data(info->attrs[GENL_TEST_ATTR_MSG]);
	pr_info("genl_test: message from port %u: %s\n", info->snd_portid, msg);

	reply = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!reply)
		return -ENOMEM;
	hdr = genlmsg_put_reply(reply, info, &genl_test_family, 0, GENL_TEST_C_MSG);
	if (!hdr || nla_put_string(reply, GENL_TEST_ATTR_MSG, msg)) {
		nlmsg_free(reply);
		return -EMSGSIZE;
	}
	genlmsg_end(reply, hdr);
	ret = genlmsg_reply(reply, info);
	if (ret)
		return ret;
	return genl_test_multicast(GENL_TEST_MCGRP0, msg, GFP_KERNEL);
}

static const struct genl_small_ops genl_test_ops[] = {
	{
		.cmd = GENL_TEST_C_MSG,
		.validate = GENL_DONT_VALIDATE_STRICT | GENL_DONT_VALIDATE_DUMP,
		.doit = genl_test_rx_msg,
	},
};

static struct genl_family genl_test_family = {
	.name = GENL_TEST_FAMILY_NAME,
	.version = 1,
	.maxattr = GENL_TEST_ATTR_MAX,
	.policy = genl_test_policy,
	.netnsok = true,
	.module = THIS_MODULE,
	.small_ops = genl_test_ops,
	.n_small_ops = ARRAY_SIZE(genl_test_ops),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
	.resv_start_op = __GENL_TEST_C_MAX,
#endif
	.mcgrps = genl_test_mcgrps,
	.n_mcgrps = ARRAY_SIZE(genl_test_mcgrps),
};

static int __init genl_test_init(void)
{
	int ret;

	ret = genl_register_family(&genl_test_family);
	if (ret) {
		pr_err("genl_test: registering the family failed: %d\n", ret);
		return ret;
	}
	timer_setup(&genl_test_timer, genl_test_timer_fn, 0);
	mod_timer(&genl_test_timer, jiffies + msecs_to_jiffies(period_ms));
	pr_info("genl_test: registered, multicasting every %u ms\n", period_ms);
	return 0;
}

static void __exit genl_test_exit(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	timer_delete_sync(&genl_test_timer);
#else
	del_timer_sync(&genl_test_timer);
#endif
	genl_unregister_family(&genl_test_family);
	pr_info("genl_test: unregistered\n");
}

module_init(genl_test_init);
module_exit(genl_test_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("genl_test: a generic netlink family for genl-gateway's tests");
