// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * moat's null TA: the cheapest trusted application there is, so that the bench measures
 * the path from the client to OP-TEE and back (Linux, the hypervisor and its mediator,
 * TF-A, OP-TEE's core) and nothing the TA does. It checks the parameter types it is given
 * and returns; it never reads or writes a memref.
 */
#include <tee_internal_api.h>

#include "null_ta.h"

TEE_Result TA_CreateEntryPoint(void)
{
	return TEE_SUCCESS;
}

void TA_DestroyEntryPoint(void)
{
}

TEE_Result TA_OpenSessionEntryPoint(uint32_t param_types, TEE_Param params[4], void **session)
{
	(void)params;
	*session = NULL;
	if (param_types != TEE_PARAM_TYPES(TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE,
					   TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	return TEE_SUCCESS;
}

void TA_CloseSessionEntryPoint(void *session)
{
	(void)session;
}

TEE_Result TA_InvokeCommandEntryPoint(void *session, uint32_t cmd, uint32_t param_types,
				      TEE_Param params[4])
{
	(void)session;
	(void)params;
	switch (cmd) {
	case NULL_TA_CMD_NOP:
		if (param_types != TEE_PARAM_TYPES(TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE,
						   TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE))
			return TEE_ERROR_BAD_PARAMETERS;
		return TEE_SUCCESS;
	case NULL_TA_CMD_MEMREF:
		if (param_types != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INOUT, TEE_PARAM_TYPE_NONE,
						   TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE))
			return TEE_ERROR_BAD_PARAMETERS;
		return TEE_SUCCESS;
	default:
		return TEE_ERROR_NOT_SUPPORTED;
	}
}
